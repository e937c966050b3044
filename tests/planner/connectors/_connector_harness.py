"""The Kubernetes emulator, recording what the planner's connector asks of it."""

from __future__ import annotations

import aiohttp.web
import kmock
from typing_extensions import override

from dynamo.testing.kube_api import FakeKubeApi

# (verb, API group, plural, subresource, object name)
Call = tuple[str, str, str, str | None, str | None]
VERBS = {kmock.action.FETCH: "get", kmock.action.UPDATE: "patch"}


class RecordingKubeApi(FakeKubeApi):
    """The emulator, remembering (verb, group, plural, subresource, name) of every request
    sent with the planner's token, to hold them against the planner's Role."""

    PLANNER_TOKEN = "planner-token"

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.planner_calls: list[Call] = []
        self.forbid_planner = False  # answer the planner's calls 403, as RBAC would

    @override
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if auth == f"Bearer {self.PLANNER_TOKEN}" and request.resource is not None:
            verb = VERBS.get(request.action, str(request.action.value).lower())
            self.planner_calls.append(
                (
                    verb,
                    request.resource.group,
                    request.resource.plural,
                    request.subresource,
                    request.name,
                )
            )
            if self.forbid_planner:
                status = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "Forbidden",
                    "code": 403,
                    "message": "dynamographdeployments.nvidia.com is forbidden",
                }
                return aiohttp.web.json_response(status, status=403)
        return await super()._handle(request)
