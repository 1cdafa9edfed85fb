"""/v1 routes of a member's notifications (inbox, unread count, mark read), the notification
preferences and the organization's Slack channel; the rules live in core/notifications."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from api.deps import (
    ADMIN,
    OriginDep,
    Principal,
    PrincipalDep,
    SessionDep,
    SettingsDep,
    require_scope,
)
from api.notifications import webhook_endpoints
from api.notifications.schemas import (
    MarkedRead,
    NotificationOut,
    NotificationPage,
    PreferencesOut,
    PreferencesUpdate,
    SlackChannelUpdate,
)
from api.pagination import CursorParam, LimitParam, page_window
from core.notifications import inbox, preferences
from core.notifications.webhooks import set_slack_url, slack_configured
from forgeline.errors import Forbidden

router = APIRouter(tags=["notifications"])
router.include_router(webhook_endpoints.router)

Admin = Annotated[Principal, Depends(require_scope(ADMIN))]
_PROBLEMS: dict[int | str, dict[str, str]] = {
    403: {"description": "No member behind this key, or the admin scope is missing"},
    404: {"description": "Not found (or another member's)"},
    422: {"description": "Invalid input"},
}


@router.get("/notifications", response_model=NotificationPage, responses=_PROBLEMS)
async def list_notifications(
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitParam = 50,
    cursor: CursorParam = None,
    unread: Annotated[bool, Query(description="Only unread notifications")] = False,
) -> NotificationPage:
    """The caller's notifications, newest first, with the number still unread."""
    page = await inbox.list_page(session, principal, cursor=cursor, limit=limit, unread_only=unread)
    visible, next_cursor = page_window(page.rows, limit)
    return NotificationPage(
        items=[NotificationOut.model_validate(r) for r in visible],
        next_cursor=next_cursor,
        unread_count=page.unread,
    )


@router.post(
    "/notifications/{notification_id}/read", response_model=NotificationOut, responses=_PROBLEMS
)
async def mark_read(
    notification_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> NotificationOut:
    return NotificationOut.model_validate(
        await inbox.mark_read(session, principal, notification_id)
    )


@router.post("/notifications/read", response_model=MarkedRead, responses=_PROBLEMS)
async def mark_all_read(session: SessionDep, principal: PrincipalDep) -> MarkedRead:
    marked = await inbox.mark_all_read(session, principal)
    return MarkedRead(marked=marked, unread_count=await inbox.unread_count(session, principal))


async def _preferences(session: SessionDep, principal: Principal) -> PreferencesOut:
    member_id = await inbox.member_of(session, principal)
    member = await preferences.member_choices(session, principal.organization_id, member_id)
    return PreferencesOut(
        member=member,
        organization=await preferences.organization_choices(session, principal.organization_id),
        slack_configured=await slack_configured(session, principal),
    )


@router.get("/notification-preferences", response_model=PreferencesOut, responses=_PROBLEMS)
async def get_preferences(session: SessionDep, principal: PrincipalDep) -> PreferencesOut:
    """Every event type with its channels: the defaults with the saved choices applied."""
    return await _preferences(session, principal)


@router.put("/notification-preferences", response_model=PreferencesOut, responses=_PROBLEMS)
async def put_preferences(
    body: PreferencesUpdate, session: SessionDep, principal: PrincipalDep
) -> PreferencesOut:
    """Change some choices (the rest stay as they are). `organization` needs the admin scope."""
    member = preferences.validated(body.member, preferences.MEMBER_CHANNELS)
    organization = preferences.validated(body.organization, preferences.ORGANIZATION_CHANNELS)
    if organization and not principal.has(ADMIN):
        raise Forbidden("Organization preferences need the 'admin' scope", required_scope=ADMIN)
    if member:
        member_id = await inbox.member_of(session, principal)
        await preferences.save(session, principal.organization_id, member_id, member)
    await preferences.save(session, principal.organization_id, None, organization)
    return await _preferences(session, principal)


@router.put(
    "/notification-channels/slack",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_PROBLEMS,
)
async def put_slack_channel(
    body: SlackChannelUpdate,
    session: SessionDep,
    settings: SettingsDep,
    principal: Admin,
    origin: OriginDep,
) -> None:
    """The organization's Slack incoming webhook (stored encrypted; null removes it)."""
    await set_slack_url(session, settings, principal, origin, body.url)
