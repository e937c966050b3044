"""`KubeClient`: get, list, watch, create, merge-patch, server-side apply and delete of any
kind, plain dicts in and out, over one lightkube client (imported here only, lazily)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dynamo.runtime.errors import ConfigError
from dynamo.runtime.kube.connection import INSTALL_HINT, KubeConnection, load_config
from dynamo.runtime.kube.errors import translate

# A label selector as plain data: `{"app": "x"}` is `app=x`, `{"app": None}` is `app` (exists),
# `{"tier": ["a", "b"]}` is `tier in (a,b)`; keys are ANDed.
Labels = Mapping[str, str | Sequence[str] | None]


@dataclass(frozen=True)
class CustomKind:
    """A kind lightkube has no model for (a CRD): where it lives in the API."""

    api_version: str  # group/version
    kind: str
    plural: str
    namespaced: bool = True


@dataclass(frozen=True)
class ObjectList:
    """A list reply: the objects and the resourceVersion to watch from (None if not given)."""

    items: list[dict[str, Any]]
    resource_version: str | None


def _plain(obj: Any) -> dict[str, Any]:
    return dict(obj.to_dict()) if hasattr(obj, "to_dict") else dict(obj)


def _what(kind: str, name: str | None, namespace: str | None) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _selector(labels: Labels | None) -> dict[str, Any] | None:
    if not labels:
        return None
    return {k: v if v is None or isinstance(v, str) else list(v) for k, v in labels.items()}


class KubeClient:
    """One API server connection per process. Build it with `await KubeClient.connect(...)`;
    namespace None means the connection's default namespace for single objects and every
    namespace for `list`/`watch`. Failures raise `KubeApiError`; a missing object is `None`
    from `get` and `False` from `delete`."""

    def __init__(
        self, client: Any, *, field_manager: str, custom_kinds: Sequence[CustomKind] = ()
    ) -> None:
        import httpx2

        self._client = client
        self.field_manager = field_manager
        self._custom = {(c.api_version, c.kind): c for c in custom_kinds}
        self._errors: tuple[type[Exception], ...] = (httpx2.HTTPError, OSError)

    @classmethod
    async def connect(
        cls,
        connection: KubeConnection | None = None,
        *,
        field_manager: str,
        custom_kinds: Sequence[CustomKind] = (),
        timeout_s: float = 10.0,
        kubeconfig: Any = None,
    ) -> KubeClient:
        """Connect to `connection`, else a ready lightkube `KubeConfig` (`kubeconfig`), else
        the in-cluster service account, else `KUBECONFIG`/`~/.kube/config`. `field_manager`
        names this client in `managedFields` (server-side apply ownership)."""
        try:
            import httpx2
            from lightkube import AsyncClient
        except ImportError as exc:
            raise ConfigError(INSTALL_HINT) from exc
        config = kubeconfig if kubeconfig is not None else await load_config(connection)
        try:
            client = AsyncClient(
                config=config, timeout=httpx2.Timeout(timeout_s), field_manager=field_manager
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"no Kubernetes configuration: {exc}") from exc
        return cls(client, field_manager=field_manager, custom_kinds=custom_kinds)

    @property
    def namespace(self) -> str:
        """The default namespace (the service account's, or the kubeconfig context's)."""
        return str(self._client.namespace)

    async def close(self) -> None:
        await self._client.close()

    def _resource(self, api_version: str, kind: str) -> Any:
        from lightkube.core.exceptions import LoadResourceError
        from lightkube.core.resource_registry import resource_registry
        from lightkube.generic_resource import (
            create_global_resource,
            create_namespaced_resource,
        )

        custom = self._custom.get((api_version, kind))
        if custom is not None:
            group, version = api_version.split("/")
            create = create_namespaced_resource if custom.namespaced else create_global_resource
            return create(group, version, kind, custom.plural)
        try:
            return resource_registry.load(api_version, kind)
        except (LoadResourceError, ImportError) as exc:
            raise ConfigError(f"unknown Kubernetes kind {api_version}/{kind}") from exc

    def _scope(self, res: Any, namespace: str | None) -> Any:
        from lightkube import ALL_NS
        from lightkube.core.resource import NamespacedResource

        if not issubclass(res, NamespacedResource):
            return None
        return ALL_NS if namespace is None else namespace

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        res = self._resource(api_version, kind)
        try:
            return _plain(await self._client.get(res, name, namespace=namespace))
        except self._errors as exc:
            error = translate(f"get {_what(kind, name, namespace)}", exc)
            if error.status == 404:
                return None
            raise error from exc

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Labels | None = None,
    ) -> ObjectList:
        """Objects of a kind in `namespace` (every namespace when None) matching `labels`.
        A kind the server does not serve (its CRD not installed) lists as empty."""
        from lightkube.core.exceptions import NotReadyError

        res = self._resource(api_version, kind)
        listing = self._client.list(
            res, namespace=self._scope(res, namespace), labels=_selector(labels)
        )
        try:
            items = [_plain(obj) async for obj in listing]
        except self._errors as exc:
            error = translate(f"list {kind}", exc)
            if error.status == 404:
                return ObjectList([], None)
            raise error from exc
        try:
            version: str | None = str(listing.resourceVersion)
        except NotReadyError:  # the reply carried no version
            version = None
        return ObjectList(items, version)

    async def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        labels: Labels | None = None,
        resource_version: str | None = None,
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """(ADDED|MODIFIED|DELETED|BOOKMARK, object) after `resource_version`, until the
        server ends the stream. Raises `KubeWatchExpiredError` (410 Gone) when that version
        is too old: list again and watch from the list's version."""
        res = self._resource(api_version, kind)
        stream = self._client.watch(
            res,
            namespace=self._scope(res, namespace),
            labels=_selector(labels),
            resource_version=resource_version,
        )
        try:
            async for event, obj in stream:
                yield str(event), _plain(obj)
        except self._errors as exc:
            raise translate(f"watch {kind}", exc) from exc
        finally:
            await stream.aclose()

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create `obj` (409 when it exists); returns it as stored."""
        from lightkube import codecs

        meta = obj.get("metadata") or {}
        what = _what(str(obj.get("kind")), meta.get("name"), meta.get("namespace"))
        self._resource(obj["apiVersion"], obj["kind"])  # registers custom kinds for codecs
        try:
            return _plain(await self._client.create(codecs.from_dict(dict(obj))))
        except self._errors as exc:
            raise translate(f"create {what}", exc) from exc

    async def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386) of the object, or of its `status`/`scale`
        subresource. The fields it changes become this client's field manager's."""
        from lightkube.types import PatchType

        res = self._resource(api_version, kind)
        if subresource is not None:
            res = getattr(res, subresource.capitalize())
        try:
            result = await self._client.patch(
                res, name, dict(patch), namespace=namespace, patch_type=PatchType.MERGE
            )
        except self._errors as exc:
            raise translate(f"patch {_what(kind, name, namespace)}", exc) from exc
        return _plain(result)

    async def apply(self, obj: Mapping[str, Any], *, force: bool = False) -> dict[str, Any]:
        """Server-side apply of `obj` (the complete set of fields this manager wants):
        creates it when missing, sets what `obj` sets, removes what this manager set
        before and no longer sets (unless another manager owns it too). A field another
        manager owns with another value is a 409 conflict unless `force` takes it over."""
        from lightkube.types import PatchType

        meta = obj.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace")
        res = self._resource(obj["apiVersion"], obj["kind"])
        try:
            result = await self._client.patch(
                res,
                name,
                dict(obj),
                namespace=namespace,
                patch_type=PatchType.APPLY,
                field_manager=self.field_manager,
                force=force,
            )
        except self._errors as exc:
            what = _what(str(obj.get("kind")), name, namespace)
            raise translate(f"apply {what}", exc) from exc
        return _plain(result)

    async def delete(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> bool:
        """Delete the object; False when it was already gone."""
        res = self._resource(api_version, kind)
        try:
            await self._client.delete(res, name, namespace=namespace)
        except self._errors as exc:
            error = translate(f"delete {_what(kind, name, namespace)}", exc)
            if error.status == 404:
                return False
            raise error from exc
        return True
