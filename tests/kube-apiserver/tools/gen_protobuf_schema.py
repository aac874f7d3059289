#!/usr/bin/env python3
"""Generates src/protobuf/schema.rs: the protobuf field tables of the types this server stores.

Run from anywhere after `cargo fetch` (it reads the sources cargo downloaded), with GO_SRC
naming a directory that holds the Go API types: `api/` (a k8s.io/api tree) and `apimachinery/`
(a k8s.io/apimachinery tree), of a release at least as new as k8s-pb's:

    GO_SRC=/path/to/go-src python3 tests/kube-apiserver/tools/gen_protobuf_schema.py \
        | rustfmt --edition 2024 > tests/kube-apiserver/src/protobuf/schema.rs

Field numbers and wire types come from the `k8s-pb` crate (kube-rs's prost bindings of the
upstream .proto files); JSON names come from `k8s-openapi` (the serde names of the same types),
matched by name without case and underscores (prost snake-cases `podIPs` to `pod_i_ps`).
Whether a scalar's zero value is shown comes from the Go types: Go's protobuf encoder writes
every value field, zero or not, and its JSON encoder leaves a value field's zero out when the
field is `omitempty`; a pointer field is on the wire only when set, so its zero is shown.
"""
import glob
import os
import re
import sys

REGISTRY = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))
PB = sorted(d for r in REGISTRY for d in glob.glob(r + "k8s-pb-0.9.*"))[-1] + "/src"
OA = sorted(d for r in REGISTRY for d in glob.glob(r + "k8s-openapi-0.29.*"))[-1] + "/src/v1_33"

ROOTS = [
    "api.core.v1.Pod", "api.core.v1.Node", "api.core.v1.Namespace", "api.core.v1.Service",
    "api.core.v1.Event", "api.core.v1.Binding", "api.core.v1.ConfigMap", "api.core.v1.Secret", "api.apps.v1.Deployment", "api.apps.v1.ReplicaSet",
    "api.apps.v1.DaemonSet", "api.coordination.v1.Lease", "api.events.v1.Event",
    "api.autoscaling.v1.Scale", "api.policy.v1.Eviction", "api.policy.v1.PodDisruptionBudget",
    "api.policy.v1.PodDisruptionBudgetList",
    "apimachinery.pkg.apis.meta.v1.DeleteOptions",
    # responses to clients that accept only protobuf
    "apimachinery.pkg.apis.meta.v1.Status",
    "api.core.v1.PodList", "api.core.v1.NodeList", "api.core.v1.NamespaceList",
    "api.core.v1.ServiceList", "api.core.v1.EventList", "api.core.v1.ConfigMapList",
    "api.core.v1.SecretList", "api.apps.v1.DeploymentList", "api.apps.v1.ReplicaSetList",
    "api.apps.v1.DaemonSetList", "api.coordination.v1.LeaseList", "api.events.v1.EventList",
    # RBAC (stored for Config::rbac)
    "api.core.v1.ServiceAccount", "api.core.v1.ServiceAccountList",
    "api.rbac.v1.Role", "api.rbac.v1.RoleList", "api.rbac.v1.RoleBinding",
    "api.rbac.v1.RoleBindingList", "api.rbac.v1.ClusterRole", "api.rbac.v1.ClusterRoleList",
    "api.rbac.v1.ClusterRoleBinding", "api.rbac.v1.ClusterRoleBindingList",
    # data (a RawExtension) set to FieldsV1's JSON-bytes form by hand
    "api.apps.v1.ControllerRevision", "api.apps.v1.ControllerRevisionList",
    # access reviews (kubectl auth can-i); `extra` and the selector attributes left out by hand
    "api.authorization.v1.SubjectAccessReview", "api.authorization.v1.SelfSubjectAccessReview",
]
# Rendered by hand-written code (their JSON forms are not their proto shapes).
SPECIAL = {
    "apimachinery.pkg.apis.meta.v1.Time": "Time",
    "apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "apimachinery.pkg.api.resource.Quantity": "Quantity",
    "apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "apimachinery.pkg.runtime.RawExtension": "RawExtension",
    "apimachinery.pkg.apis.meta.v1.FieldsV1": "FieldsV1",
    "apimachinery.pkg.apis.meta.v1.Duration": "Duration",
}

GO_SRC = os.environ.get("GO_SRC")
GO_FILES = [
    "api/core/v1/types.go", "api/apps/v1/types.go", "api/policy/v1/types.go",
    "api/autoscaling/v1/types.go", "api/coordination/v1/types.go", "api/events/v1/types.go",
    "api/rbac/v1/types.go", "api/authorization/v1/types.go",
    "apimachinery/pkg/apis/meta/v1/types.go",
]
GO_FIELD_RE = re.compile(
    r'^\s*(?:\w+\s+)?(\*?)[\w.\[\]]+\s+`json:"([^"]*)"[^`]*protobuf:"[^"]*name=(\w+)')


def go_facts():
    """{(struct lowercased, proto field name): (pointer, omitempty)} from the Go types."""
    if not GO_SRC:
        sys.exit("set GO_SRC (see the module docs)")
    facts = {}
    for rel in GO_FILES:
        struct = None
        for line in open(os.path.join(GO_SRC, rel)):
            m = re.match(r"^type (\w+) struct \{", line)
            if m:
                struct = m.group(1).lower()
                continue
            if line.startswith("}"):
                struct = None
                continue
            m = GO_FIELD_RE.match(line)
            if struct and m:
                ptr, json_tag, proto = m.groups()
                opts = json_tag.split(",")[1:]
                facts[(struct, proto)] = (ptr == "*", "omitempty" in opts or "omitzero" in opts)
    return facts


FIELD_RE = re.compile(
    r'#\[prost\((?P<attr>[^\]]*)\)\]\s*pub (?:r#)?(?P<name>\w+):\s*(?P<ty>.*?),\n(?=\s*(?:///|#\[|$))',
    re.S)


def modpath(file):
    rel = os.path.relpath(os.path.dirname(file), PB)
    return rel.replace(os.sep, ".")


def resolve(mod, rust_ty):
    """`super::super::X::Y` relative to module `mod` -> absolute dotted name."""
    t = rust_ty.replace("::core::option::Option<", "").replace("::prost::alloc::vec::Vec<", "")
    t = t.replace("::prost::alloc::boxed::Box<", "").replace(">", "").strip()
    parts = mod.split(".")
    segs = [s for s in t.split("::") if s]
    while segs and segs[0] == "super":
        parts = parts[:-1]
        segs = segs[1:]
    return ".".join(parts + segs)


def parse_pb():
    messages = {}
    for f in glob.glob(PB + "/**/mod.rs", recursive=True):
        mod = modpath(f)
        src = open(f).read()
        for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", src, re.S):
            name, body = m.group(1), m.group(2)
            fields = []
            for fm in FIELD_RE.finditer(body + "\n"):
                attr, fname, ty = fm.group("attr"), fm.group("name"), fm.group("ty")
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                kind = attr.split(",")[0].strip()
                if kind.startswith("btree_map"):
                    k, v = re.search(r'btree_map = "(\w+), (\w+)"', attr).groups()
                    assert k == "string", attr
                    if v == "message":
                        inner = ty.split(",", 1)[1].rsplit(">", 1)[0].strip().rstrip(",").strip()
                        fields.append((tag, fname, "map", ("message", resolve(mod, inner))))
                    else:
                        fields.append((tag, fname, "map", (v, None)))
                    continue
                card = "repeated" if "repeated" in attr else "single"
                if kind.startswith("bytes"):
                    kind = "bytes"
                if kind == "message":
                    fields.append((tag, fname, card, ("message", resolve(mod, ty))))
                else:
                    fields.append((tag, fname, card, (kind, None)))
            messages[mod + "." + name] = fields
    return messages


def openapi_names(full):
    """JSON names of the k8s-openapi struct for `full`, or None."""
    mod, name = full.rsplit(".", 1)
    d = os.path.join(OA, *mod.split("."))
    for f in glob.glob(d + "/*.rs"):
        src = open(f).read()
        # k8s-pb spells acronyms as words (AwsElasticBlockStore...), k8s-openapi as upstream
        m = re.search(r"pub struct (\w+) \{", src)
        if m and m.group(1).lower() == name.lower():
            return re.findall(r'"([A-Za-z0-9$]+)" => Field::Key_', src)
    return None


def norm(s):
    return s.replace("_", "").lower()


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def main():
    msgs = parse_pb()
    todo, seen = list(ROOTS), set()
    while todo:
        m = todo.pop()
        if m in seen or m in SPECIAL:
            continue
        seen.add(m)
        for _tag, _n, _card, (kind, ref) in msgs[m]:
            if kind == "message":
                todo.append(ref)
    out = []
    out.append("// @generated by tools/gen_protobuf_schema.py from k8s-pb 0.9 (field numbers)\n")
    out.append("// and k8s-openapi 0.29 v1_33 (JSON names). Do not edit by hand.\n\n")
    out.append("use super::{Card::*, Message, Special as Sp, Ty::*, f};\n\n")
    out.append("/// Every message reachable from the stored kinds, sorted by name.\n")
    out.append("pub(crate) static MESSAGES: &[Message] = &[\n")
    unmatched = []
    # Go embeds some structs (`json:",inline"`): the proto has a field for the embedded
    # struct, the JSON has its fields in the parent. Such a field is a message field with no
    # JSON name of its own; its message takes its JSON names from the parent.
    names_of = {m: openapi_names(m) for m in seen}
    inline = set()
    for m in sorted(seen):
        own = names_of[m]
        for tag, fname, card, (kind, ref) in msgs[m]:
            own_norm = {norm(n) for n in own or []}
            child = [norm(f[1]) for f in msgs.get(ref, [])]
            # fields newer than the k8s-openapi version are not inline: most of an embedded
            # struct's fields must be the parent's
            embedded = child and 2 * sum(c in own_norm for c in child) >= len(child)
            if own and kind == "message" and ref not in SPECIAL and norm(fname) not in own_norm and embedded:
                inline.add((m, tag))
                if names_of.get(ref) is None:
                    names_of[ref] = own
    facts = go_facts()
    for m in sorted(seen):
        names = names_of[m] or []
        by_norm = {norm(n): n for n in names}
        out.append("    Message {\n        name: %r,\n        fields: &[\n" % m)
        for tag, fname, card, (kind, ref) in sorted(msgs[m]):
            json = by_norm.get(norm(fname))
            if (m, tag) in inline:
                json = ""
            elif json is None:
                json = camel(fname)
                unmatched.append("%s.%s -> %s" % (m, fname, json))
            if kind == "message":
                ty = "Special(%s)" % ("Sp::" + SPECIAL[ref]) if ref in SPECIAL else "Msg(%r)" % ref
            else:
                ty = {"string": "Str", "bool": "Bool", "int32": "I32", "int64": "I64",
                      "bytes": "Bytes"}[kind]
            c = {"single": "One", "repeated": "Many", "map": "Map"}[card]
            if card == "single" and kind != "message":
                fact = facts.get((m.rsplit(".", 1)[1].lower(), json))
                if fact is None:
                    # newer than the Go sources: show zeros (a dropped pointer zero changes meaning)
                    unmatched.append("%s.%s: no Go field, zero kept" % (m, json))
                    c = "Keep"
                elif fact[0] or not fact[1]:
                    c = "Keep"
            if (m, tag) in inline:
                c = "Inline"
            out.append("            f(%d, %r, %s, %s),\n" % (tag, json, c, ty))
        out.append("        ],\n    },\n")
    out.append("];\n")
    sys.stdout.write("".join(out).replace("'", '"'))
    for u in unmatched:
        sys.stderr.write("no k8s-openapi name, camel-cased: %s\n" % u)


main()
