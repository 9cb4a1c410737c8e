"""The low layer under :mod:`deploy.cluster.kube`: one raw API call, the server's error message,
and API discovery (kind -> plural and scope) as kubectl resolves them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.errors import StageError

JSON = "application/json"


def request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: list[tuple[str, Any]] | None = None,
    body: Any = None,
    content_type: str = JSON,
) -> dict[str, Any]:
    """One call to the API server; the decoded JSON answer. ApiException for a non-2xx status."""
    headers = {"Accept": JSON, "Content-Type": content_type}
    serialized = api.param_serialize(
        method, path, query_params=query or [], header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    response = api.call_api(*serialized)
    response.read()  # type: ignore[no-untyped-call]
    if not 200 <= response.status <= 299:
        api.response_deserialize(response, {})  # raises the ApiException of that status
        raise ApiException(status=response.status, reason=response.reason)
    data = json.loads(response.data or b"{}")
    return data if isinstance(data, dict) else {}


def server_message(exc: ApiException) -> str:
    """The API server's own words for a refused call (its Status message), else status and reason."""
    try:
        status = json.loads(exc.body or "")
    except (TypeError, ValueError):
        status = None
    message = status.get("message") if isinstance(status, dict) else None
    return f"{exc.status} {exc.reason}: {message}" if message else f"{exc.status} {exc.reason}"


@dataclass(frozen=True)
class Resource:
    """Where the objects of one kind live: ``/api/v1`` or ``/apis/<group>/<version>`` + plural."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, name: str | None = None, namespace: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        where = f"{base}/namespaces/{namespace or 'default'}" if self.namespaced else base
        return f"{where}/{self.plural}" + (f"/{name}" if name else "")


class Discovery:
    """API discovery, read once per group version: kind -> :class:`Resource`."""

    def __init__(self, api: client.ApiClient, stage: str) -> None:
        self.api = api
        self.stage = stage
        self._lists: dict[str, list[dict[str, Any]]] = {}

    def resource(self, api_version: str, kind: str) -> Resource:
        found = self.find(api_version, kind)
        if found is not None:
            return found
        raise StageError(
            self.stage,
            f"the API server serves no kind {kind} in {api_version}",
            hint=f"check the apiVersion of the {kind} manifest, or install the CRD that defines it first",
        )

    def find(self, api_version: str, kind: str) -> Resource | None:
        """The kind's :class:`Resource`, None when the API server serves no such kind (e.g. its CRD is gone)."""
        for item in self._resources(api_version):
            if item.get("kind") == kind and "/" not in str(item.get("name", "")):
                return Resource(api_version, kind, str(item["name"]), bool(item.get("namespaced")))
        return None

    def _resources(self, api_version: str) -> list[dict[str, Any]]:
        if api_version not in self._lists:
            path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            try:
                listing = request(self.api, "GET", path)
            except ApiException as exc:
                if exc.status != 404:
                    raise StageError(self.stage, f"API discovery of {api_version}: {server_message(exc)}") from exc
                listing = {}
            self._lists[api_version] = list(listing.get("resources") or [])
        return self._lists[api_version]
