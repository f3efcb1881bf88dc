"""A small kustomize in Python: the subset that deploy/k8s and deploy/observability use.

:func:`build` renders a kustomization directory into a list of Kubernetes objects (dicts), the
way ``kubectl kustomize`` does for these fields (tests/deploy compares the two):

- ``resources``: YAML files (inside the kustomization's directory) and other kustomization
  directories (bases, anywhere), in order;
- ``configMapGenerator``: ``files`` (``path`` or ``key=path``) and ``literals`` (``key=value``),
  with ``options.labels`` / ``options.annotations``; name-suffix hashes are not implemented, so
  ``options.disableNameSuffixHash: true`` is required;
- ``patches``: strategic-merge patches (``path:`` or inline ``patch:``) that name their target
  by kind and ``metadata.name`` (no ``target:`` selector, no JSON 6902 operations, no
  ``$patch`` directives). Maps merge key by key, ``null`` deletes a key, lists with a Kubernetes
  merge key (containers and env by name, volumeMounts by mountPath, ports by containerPort or
  port ...) merge item by item with the patch's items first, and every other list is replaced;
- ``namespace``: set on every namespaced object;
- ``labels``: ``pairs`` added to ``metadata.labels``, and with ``includeTemplates: true`` to pod
  template labels; ``includeSelectors: true`` is not implemented;
- ``images``: ``name`` matched against container images, replaced by ``newName``, ``newTag``
  or ``digest``.

Any other field raises :class:`KustomizeError` naming it, so a kustomization that needs more of
kustomize fails loudly instead of rendering something different. The output is sorted as
kustomize's default ("legacy") order, which puts Namespaces and ServiceAccounts before the
objects that need them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KustomizeError", "build", "to_yaml", "load_yaml_documents"]

Obj = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "labels",
        "patches",
        "images",
        "configMapGenerator",
    }
)

#: Kinds without a namespace (the ones a namespace transformer must leave alone).
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace", "Node", "PersistentVolume", "StorageClass", "CSIDriver", "CSINode",
        "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "APIService",
        "PriorityClass", "RuntimeClass", "IngressClass", "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
)  # fmt: skip

#: Kinds whose pod template ``labels`` with ``includeTemplates`` reaches, and where it lives.
_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

#: Strategic-merge keys of the lists that merge item by item (from the Kubernetes OpenAPI
#: ``x-kubernetes-patch-merge-key``); ``ports`` is handled apart (containerPort or port).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}

# kustomize's legacy order (api/resid/gvk.go): these kinds first, in this order, then every
# other kind sorted by group_version_kind, then these last.
_ORDER_FIRST = (
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
    "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap",
    "Secret", "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume",
    "PersistentVolumeClaim", "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget",
)  # fmt: skip
_ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


class KustomizeError(ValueError):
    """The kustomization is malformed or uses a feature this renderer does not implement."""


@dataclass
class _Resource:
    obj: Obj
    source: str  # where it came from, for error messages


def build(directory: Path | str) -> list[Obj]:
    """Render the kustomization in ``directory``; objects in kustomize's legacy order."""
    resources = _build(Path(directory).resolve(), ())
    return [r.obj for r in sorted(resources, key=lambda r: _legacy_sort_key(r.obj))]


def to_yaml(objects: Iterable[Obj]) -> str:
    """Objects as one multi-document YAML stream (block style, multi-line strings as ``|``)."""
    return "---\n".join(
        yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120) for obj in objects
    )


def load_yaml_documents(path: Path) -> list[Obj]:
    """The non-empty documents of a YAML file, each required to be a mapping."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as exc:
        raise KustomizeError(f"{path}: not valid YAML: {exc}") from None
    for d in docs:
        if not isinstance(d, dict):
            raise KustomizeError(
                f"{path}: every YAML document must be a mapping, got {type(d).__name__}"
            )
    return docs


class _Dumper(yaml.SafeDumper):
    """Block-style YAML with ``|`` literals for multi-line strings and indented lists."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


# ---- building ------------------------------------------------------------------------------------


def _kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    raise KustomizeError(f"{directory}: no kustomization.yaml")


def _build(directory: Path, stack: tuple[Path, ...]) -> list[_Resource]:
    if directory in stack:
        chain = " -> ".join(str(p) for p in (*stack, directory))
        raise KustomizeError(f"kustomization cycle: {chain}")
    kfile = _kustomization_file(directory)
    docs = load_yaml_documents(kfile)
    if len(docs) != 1:
        raise KustomizeError(f"{kfile}: expected one YAML document, found {len(docs)}")
    k = docs[0]
    unsupported = sorted(set(k) - SUPPORTED_FIELDS)
    if unsupported:
        raise KustomizeError(
            f"{kfile}: {', '.join(unsupported)} not supported by faceoff's kustomize subset "
            f"(supported: {', '.join(sorted(SUPPORTED_FIELDS))})"
        )
    if k.get("kind", "Kustomization") != "Kustomization":
        raise KustomizeError(f"{kfile}: kind {k['kind']!r} is not supported (only Kustomization)")

    resources: list[_Resource] = []
    for entry in _list(k, "resources", kfile):
        if not isinstance(entry, str) or "://" in entry:
            raise KustomizeError(f"{kfile}: resource {entry!r} must be a local file or directory")
        target = (directory / entry).resolve()
        if target.is_dir():
            resources.extend(_build(target, (*stack, directory)))
        elif target.is_file():
            _check_inside(directory, target, kfile)
            resources.extend(_Resource(doc, f"{target}") for doc in load_yaml_documents(target))
        else:
            raise KustomizeError(f"{kfile}: resource {entry!r} does not exist")
    for spec in _list(k, "configMapGenerator", kfile):
        resources.append(
            _Resource(_generate_config_map(spec, directory, kfile), f"{kfile} configMapGenerator")
        )
    _check_unique(resources)

    for spec in _list(k, "patches", kfile):
        _apply_patch(resources, spec, directory, kfile)
    if "namespace" in k:
        _set_namespace(resources, k["namespace"], kfile)
    for spec in _list(k, "labels", kfile):
        _add_labels(resources, spec, kfile)
    for spec in _list(k, "images", kfile):
        _set_images(resources, spec, kfile)
    return resources


def _list(k: Obj, field: str, kfile: Path) -> list[Any]:
    value = k.get(field) or []
    if not isinstance(value, list):
        raise KustomizeError(f"{kfile}: {field} must be a list")
    return value


def _check_inside(root: Path, path: Path, kfile: Path) -> None:
    """Like kustomize's load restriction: files must lie in or below the kustomization root."""
    if not path.is_relative_to(root):
        raise KustomizeError(
            f"{kfile}: {path} is outside {root}; reference its directory as a base instead"
        )


def _resource_id(obj: Obj) -> tuple[str, str, str, str]:
    try:
        meta = obj["metadata"]
        return (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])
    except (KeyError, TypeError):
        raise KustomizeError(
            f"object without apiVersion, kind or metadata.name: {str(obj)[:200]}"
        ) from None


def _check_unique(resources: list[_Resource]) -> None:
    seen: dict[tuple[str, str, str, str], str] = {}
    for r in resources:
        rid = _resource_id(r.obj)
        api_version, kind, _ns, name = rid
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        key = (group, kind, rid[2], name)
        if key in seen:
            raise KustomizeError(
                f"{kind}/{name} is defined twice: in {seen[key]} and in {r.source}"
            )
        seen[key] = r.source


def _generate_config_map(spec: Obj, directory: Path, kfile: Path) -> Obj:
    unknown = set(spec) - {"name", "files", "literals", "options"}
    if unknown:
        raise KustomizeError(
            f"{kfile}: configMapGenerator field(s) {sorted(unknown)} not supported"
        )
    options = spec.get("options") or {}
    unknown = set(options) - {"disableNameSuffixHash", "labels", "annotations"}
    if unknown:
        raise KustomizeError(f"{kfile}: configMapGenerator options {sorted(unknown)} not supported")
    if options.get("disableNameSuffixHash") is not True:
        raise KustomizeError(
            f"{kfile}: configMapGenerator {spec.get('name')!r}: name-suffix hashes are not implemented; "
            "set options.disableNameSuffixHash: true"
        )
    data: dict[str, str] = {}
    for item in spec.get("files") or []:
        key, _, rel = item.rpartition("=") if "=" in item else ("", "", item)
        path = (directory / rel).resolve()
        _check_inside(directory, path, kfile)
        if not path.is_file():
            raise KustomizeError(f"{kfile}: configMapGenerator file {rel!r} does not exist")
        data[key or path.name] = path.read_text(encoding="utf-8")
    for item in spec.get("literals") or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise KustomizeError(f"{kfile}: literal {item!r} is not key=value")
        data[key] = value
    metadata: Obj = {"name": spec["name"]}
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    if options.get("annotations"):
        metadata["annotations"] = dict(options["annotations"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


# ---- patches ---------------------------------------------------------------------------------------


def _apply_patch(resources: list[_Resource], spec: Obj, directory: Path, kfile: Path) -> None:
    unknown = set(spec) - {"path", "patch"}
    if unknown:
        raise KustomizeError(
            f"{kfile}: patch field(s) {sorted(unknown)} not supported (only strategic-merge patches "
            "given by path or inline patch, targeting the object they name)"
        )
    if ("path" in spec) == ("patch" in spec):
        raise KustomizeError(f"{kfile}: a patch needs exactly one of path or patch")
    if "path" in spec:
        path = (directory / spec["path"]).resolve()
        _check_inside(directory, path, kfile)
        if not path.is_file():
            raise KustomizeError(f"{kfile}: patch file {spec['path']!r} does not exist")
        patches, where = load_yaml_documents(path), str(path)
    else:
        try:
            patches = [d for d in yaml.safe_load_all(spec["patch"]) if d is not None]
        except yaml.YAMLError as exc:
            raise KustomizeError(f"{kfile}: inline patch is not valid YAML: {exc}") from None
        where = f"{kfile} (inline patch)"
    for patch in patches:
        if not isinstance(patch, dict):
            raise KustomizeError(
                f"{where}: JSON 6902 patches are not supported, only strategic-merge patches"
            )
        kind = patch.get("kind")
        meta = patch.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace")
        if not kind or not name:
            raise KustomizeError(
                f"{where}: a strategic-merge patch must name its target's kind and metadata.name"
            )
        matches = [
            r for r in resources
            if r.obj["kind"] == kind and r.obj["metadata"]["name"] == name
            and (namespace is None or r.obj["metadata"].get("namespace") == namespace)
        ]  # fmt: skip
        if len(matches) != 1:
            found = "no" if not matches else f"{len(matches)}"
            raise KustomizeError(
                f"{where}: {found} resources match the patch's target {kind}/{name}"
            )
        matches[0].obj = _merge(matches[0].obj, patch, where)


def _merge(original: Any, patch: Any, where: str) -> Any:
    """Strategic merge of ``patch`` into ``original`` (both left untouched)."""
    if not (isinstance(original, dict) and isinstance(patch, dict)):
        return copy.deepcopy(patch)
    out = copy.deepcopy(original)
    for key, value in patch.items():
        if isinstance(key, str) and key.startswith("$"):
            raise KustomizeError(f"{where}: patch directive {key!r} is not supported")
        if value is None:
            out.pop(key, None)
        elif key in out and isinstance(out[key], list) and isinstance(value, list):
            out[key] = _merge_list(key, out[key], value, where)
        elif key in out:
            out[key] = _merge(out[key], value, where)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_list(field: str, original: list[Any], patch: list[Any], where: str) -> list[Any]:
    key = _MERGE_KEYS.get(field)
    if field == "ports":
        key = (
            "containerPort"
            if any(isinstance(i, dict) and "containerPort" in i for i in original + patch)
            else "port"
        )
    if key is None or not all(isinstance(i, dict) and key in i for i in original + patch):
        return copy.deepcopy(patch)
    by_key = {item[key]: item for item in original}
    merged = [
        _merge(by_key[p[key]], p, where) if p[key] in by_key else copy.deepcopy(p) for p in patch
    ]
    patched = {p[key] for p in patch}
    return merged + [copy.deepcopy(o) for o in original if o[key] not in patched]


# ---- transformers ----------------------------------------------------------------------------------


def _set_namespace(resources: list[_Resource], namespace: Any, kfile: Path) -> None:
    if not isinstance(namespace, str) or not namespace:
        raise KustomizeError(f"{kfile}: namespace must be a non-empty string")
    for r in resources:
        if r.obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            raise KustomizeError(
                f"{r.source}: {r.obj['kind']} subjects are not re-namespaced by this renderer"
            )
        if r.obj["kind"] not in CLUSTER_SCOPED_KINDS:
            r.obj["metadata"]["namespace"] = namespace


def _add_labels(resources: list[_Resource], spec: Obj, kfile: Path) -> None:
    unknown = set(spec) - {"pairs", "includeSelectors", "includeTemplates"}
    if unknown:
        raise KustomizeError(f"{kfile}: labels field(s) {sorted(unknown)} not supported")
    if spec.get("includeSelectors"):
        raise KustomizeError(
            f"{kfile}: labels.includeSelectors is not implemented (selectors are immutable anyway)"
        )
    pairs = {str(k): str(v) for k, v in (spec.get("pairs") or {}).items()}
    for r in resources:
        r.obj["metadata"].setdefault("labels", {}).update(pairs)
        path = _TEMPLATE_PATHS.get(r.obj["kind"])
        if spec.get("includeTemplates") and path is not None:
            node = r.obj
            for part in path:
                node = node.setdefault(part, {})
            node.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _containers(node: Any) -> Iterator[Obj]:
    """Every container (and init/ephemeral container) anywhere in an object."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers", "ephemeralContainers") and isinstance(
                value, list
            ):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``registry:5000/repo/name:tag@sha256:...`` -> (name, tag, digest)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _set_images(resources: list[_Resource], spec: Obj, kfile: Path) -> None:
    unknown = set(spec) - {"name", "newName", "newTag", "digest"}
    if unknown or "name" not in spec:
        raise KustomizeError(
            f"{kfile}: images entries take name, newName, newTag, digest; got {sorted(spec)}"
        )
    for r in resources:
        for container in _containers(r.obj):
            name, tag, digest = split_image(str(container.get("image", "")))
            if name != spec["name"]:
                continue
            name = spec.get("newName") or name
            if spec.get("digest"):
                tag, digest = None, str(spec["digest"])
            elif spec.get("newTag") is not None:
                tag, digest = str(spec["newTag"]), None
            container["image"] = (
                name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
            )


def _legacy_sort_key(obj: Obj) -> tuple[int, str, str, str]:
    kind = obj["kind"]
    if kind in _ORDER_FIRST:
        rank = _ORDER_FIRST.index(kind) - len(_ORDER_FIRST)
    elif kind in _ORDER_LAST:
        rank = 1 + _ORDER_LAST.index(kind)
    else:
        rank = 0
    api_version = obj["apiVersion"]
    group, _, version = api_version.rpartition("/")
    gvk = "_".join((group or "~G", version or "~V", kind))
    meta = obj["metadata"]
    return (rank, gvk, meta.get("namespace") or "", meta["name"])
