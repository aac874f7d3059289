package com.example.hello;

import java.time.LocalTime;
import java.time.format.DateTimeFormatter;

/**
 * A Koupleless module you can read and change: it says hello, then prints a line every ten
 * seconds until it is stopped. The agent's process backend runs it as its own JVM; its output
 * goes to the module's log ({@code module.log} in the agent's work directory).
 *
 * <p>{@code BIZ_VERSION} and the module name come from the manifest the build script writes;
 * the module reads the version back from there to show which one runs.
 */
public final class HelloModule {
    private HelloModule() {}

    public static void main(String[] args) throws InterruptedException {
        String version = HelloModule.class.getPackage().getImplementationVersion();
        System.out.println("hello from module hello " + (version == null ? "?" : version)
                + " (pid " + ProcessHandle.current().pid() + ")");
        Runtime.getRuntime().addShutdownHook(new Thread(() ->
                System.out.println("module hello stopping")));
        DateTimeFormatter clock = DateTimeFormatter.ofPattern("HH:mm:ss");
        while (true) {
            Thread.sleep(10_000);
            System.out.println("module hello still here at " + LocalTime.now().format(clock));
        }
    }
}
