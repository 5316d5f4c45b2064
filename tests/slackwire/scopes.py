"""Which OAuth scope each Web API method needs (docs.slack.dev/reference/methods/<method>).

The fake refuses a call with `missing_scope` when the app was not granted its scope, and the
least-privilege test maps every method the bot calls through this table to the manifest. A method
not listed here is answered `unknown_method`: add it (with its documented scope) before use.
`conversations.*` and `files.*` scopes depend on the kind of channel; the entry lists the scope
for each kind the bot may work in (public `C…`, private `G…`/private `C…`).
"""

from __future__ import annotations

# method -> scopes, any one of which suffices for the kind of conversation; () = no scope needed
METHOD_SCOPES: dict[str, dict[str, tuple[str, ...]]] = {
    "auth.test": {"any": ()},
    "apps.connections.open": {"any": ("connections:write",)},  # app-level token
    "chat.postMessage": {"any": ("chat:write",)},
    "chat.update": {"any": ("chat:write",)},
    "chat.delete": {"any": ("chat:write",)},
    "chat.postEphemeral": {"any": ("chat:write",)},
    "chat.getPermalink": {"any": ()},
    "conversations.replies": {"public": ("channels:history",), "private": ("groups:history",),
                              "im": ("im:history",), "mpim": ("mpim:history",)},
    "conversations.history": {"public": ("channels:history",), "private": ("groups:history",),
                              "im": ("im:history",), "mpim": ("mpim:history",)},
    "conversations.info": {"public": ("channels:read",), "private": ("groups:read",),
                           "im": ("im:read",), "mpim": ("mpim:read",)},
    "views.open": {"any": ()},
    "views.update": {"any": ()},
    "usergroups.users.list": {"any": ("usergroups:read",)},
    "users.info": {"any": ("users:read",)},
    "files.getUploadURLExternal": {"any": ("files:write",)},
    "files.completeUploadExternal": {"any": ("files:write",)},
    "reactions.add": {"any": ("reactions:write",)},
}

# What a slash command needs besides the methods it calls.
COMMAND_SCOPE = "commands"


def scopes_for(method: str, kind: str = "public") -> tuple[str, ...]:
    table = METHOD_SCOPES[method]
    return table.get("any", table.get(kind, ()))
