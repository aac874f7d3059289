/**
 * The base JVM `scripts/up` starts for each base: a stand-in for a real SOFAArk base (a
 * Spring Boot application), compiled at start-up. It does nothing but stay up, so the agent
 * beside it has a real JVM to report: its metaspace limit becomes the Node's memory.
 */
public final class DemoBase {
    public static void main(String[] args) throws InterruptedException {
        String name = args.length > 0 ? args[0] : "base";
        System.out.println("base " + name + " up (pid " + ProcessHandle.current().pid() + ")");
        Runtime.getRuntime().addShutdownHook(new Thread(() -> System.out.println("base " + name + " stopping")));
        Thread.sleep(Long.MAX_VALUE);
    }
}
