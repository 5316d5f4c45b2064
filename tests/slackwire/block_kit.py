"""Block Kit's documented limits, checked as Slack checks them (lengths in UTF-16 code units).

Slack refuses a message whose blocks break a limit with `invalid_blocks` (the `errors` list names
each problem with a JSON pointer), and a view with `invalid_arguments`. Sources: the Block Kit
reference on docs.slack.dev (blocks, block elements, composition objects, modal views).

Only the block types and elements the bot draws are modelled in detail; an unknown block type is
refused, as Slack refuses it, so a new kind of block needs its limits written here first.
"""

from __future__ import annotations

from typing import Any

MESSAGE_BLOCKS = 50
MODAL_BLOCKS = 100
SECTION_TEXT = 3000
SECTION_FIELDS, FIELD_TEXT = 10, 2000
HEADER_TEXT = 150
CONTEXT_ELEMENTS = 10
ACTIONS_ELEMENTS = 25
BUTTON_TEXT, BUTTON_VALUE, BUTTON_URL = 75, 2000, 3000
ID_LENGTH = 255  # action_id, block_id, callback_id
CONFIRM_TITLE, CONFIRM_TEXT, CONFIRM_BUTTON = 100, 300, 30
OPTION_TEXT, OPTION_VALUE = 75, 150
CHOICE_OPTIONS = 10  # checkboxes, radio buttons
SELECT_OPTIONS = 100  # a static_select's options (or option groups)
PLACEHOLDER = 150
INPUT_LABEL, INPUT_HINT = 2000, 2000
PLAIN_INPUT_INITIAL = 3000
VIEW_TITLE = VIEW_BUTTON = 24
PRIVATE_METADATA = 3000
MESSAGE_TEXT = 40000  # msg_too_long beyond this


def units(text: str) -> int:
    """Length as Slack counts it: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


class Problems:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, message: str, pointer: str) -> None:
        self.errors.append(f"{message} [json-pointer:{pointer}]")

    def text(self, obj: Any, pointer: str, limit: int, kinds: tuple[str, ...] = (
            "plain_text", "mrkdwn")) -> None:
        if not isinstance(obj, dict) or obj.get("type") not in kinds:
            self.add(f"must be a text object of type {' or '.join(kinds)}", pointer)
            return
        text = obj.get("text")
        if not isinstance(text, str) or units(text) < 1:
            self.add("must be more than 0 characters", f"{pointer}/text")
        elif units(text) > limit:
            self.add(f"must be less than {limit + 1} characters", f"{pointer}/text")

    def length(self, value: Any, pointer: str, limit: int, required: bool = False) -> None:
        if value is None:
            if required:
                self.add("is required", pointer)
            return
        if not isinstance(value, str) or units(value) < 1:
            self.add("must be a non-empty string", pointer)
        elif units(value) > limit:
            self.add(f"must be less than {limit + 1} characters", pointer)


def _confirm(p: Problems, confirm: Any, at: str) -> None:
    p.text(confirm.get("title"), f"{at}/title", CONFIRM_TITLE, ("plain_text",))
    p.text(confirm.get("text"), f"{at}/text", CONFIRM_TEXT)
    p.text(confirm.get("confirm"), f"{at}/confirm", CONFIRM_BUTTON, ("plain_text",))
    p.text(confirm.get("deny"), f"{at}/deny", CONFIRM_BUTTON, ("plain_text",))


def _element(p: Problems, element: Any, at: str, action_ids: set[str]) -> None:
    if not isinstance(element, dict):
        p.add("must be an object", at)
        return
    kind = element.get("type")
    action_id = element.get("action_id")
    if action_id is not None:
        p.length(action_id, f"{at}/action_id", ID_LENGTH)
        if action_id in action_ids:
            p.add("action_id must be unique in the surface", f"{at}/action_id")
        action_ids.add(action_id)
    if kind == "button":
        p.text(element.get("text"), f"{at}/text", BUTTON_TEXT, ("plain_text",))
        p.length(element.get("value"), f"{at}/value", BUTTON_VALUE)
        p.length(element.get("url"), f"{at}/url", BUTTON_URL)
        if element.get("style") not in (None, "primary", "danger"):
            p.add("must be primary or danger", f"{at}/style")
        if "confirm" in element:
            _confirm(p, element["confirm"], f"{at}/confirm")
    elif kind == "plain_text_input":
        p.length(element.get("initial_value"), f"{at}/initial_value", PLAIN_INPUT_INITIAL)
    elif kind in ("checkboxes", "radio_buttons", "static_select"):
        select = kind == "static_select"
        options = element.get("options") or []
        if select and "option_groups" in element:
            p.add("options and option_groups exclude each other" if options else
                  "option_groups are not modelled here", f"{at}/option_groups")
        if not options:
            p.add("must have at least 1 option", f"{at}/options")
        most = SELECT_OPTIONS if select else CHOICE_OPTIONS
        if len(options) > most:
            p.add(f"must have no more than {most} items", f"{at}/options")
        for n, option in enumerate(options):
            # A select menu's options are plain_text only.
            p.text(option.get("text"), f"{at}/options/{n}/text", OPTION_TEXT,
                   ("plain_text",) if select else ("plain_text", "mrkdwn"))
            p.length(option.get("value"), f"{at}/options/{n}/value", OPTION_VALUE,
                     required=True)
        values = [o.get("value") for o in options if isinstance(o, dict)]
        if len(set(values)) != len(values):
            p.add("option values must be unique", f"{at}/options")
        if select:
            if "placeholder" in element:
                p.text(element["placeholder"], f"{at}/placeholder", PLACEHOLDER, ("plain_text",))
            if "initial_option" in element and element["initial_option"] not in options:
                p.add("initial_option must exactly match one of the options",
                      f"{at}/initial_option")
    else:
        p.add(f"unsupported element type {kind!r}", f"{at}/type")


def _block(p: Problems, block: Any, at: str, surface: str, block_ids: set[str],
           action_ids: set[str]) -> None:
    if not isinstance(block, dict):
        p.add("must be an object", at)
        return
    block_id = block.get("block_id")
    if block_id is not None:
        p.length(block_id, f"{at}/block_id", ID_LENGTH)
        if block_id in block_ids:
            p.add("block_id must be unique in the surface", f"{at}/block_id")
        block_ids.add(block_id)
    kind = block.get("type")
    if kind == "section":
        if "text" not in block and "fields" not in block:
            p.add("must have text or fields", at)
        if "text" in block:
            p.text(block["text"], f"{at}/text", SECTION_TEXT)
        fields = block.get("fields") or []
        if len(fields) > SECTION_FIELDS:
            p.add(f"must have no more than {SECTION_FIELDS} items", f"{at}/fields")
        for n, field in enumerate(fields):
            p.text(field, f"{at}/fields/{n}", FIELD_TEXT)
        if "accessory" in block:
            _element(p, block["accessory"], f"{at}/accessory", action_ids)
    elif kind == "header":
        p.text(block.get("text"), f"{at}/text", HEADER_TEXT, ("plain_text",))
    elif kind == "divider":
        pass
    elif kind == "context":
        elements = block.get("elements") or []
        if not 1 <= len(elements) <= CONTEXT_ELEMENTS:
            p.add(f"must have 1 to {CONTEXT_ELEMENTS} items", f"{at}/elements")
        for n, element in enumerate(elements):
            p.text(element, f"{at}/elements/{n}", SECTION_TEXT)
    elif kind == "actions":
        elements = block.get("elements") or []
        if not 1 <= len(elements) <= ACTIONS_ELEMENTS:
            p.add(f"must have 1 to {ACTIONS_ELEMENTS} items", f"{at}/elements")
        for n, element in enumerate(elements):
            _element(p, element, f"{at}/elements/{n}", action_ids)
    elif kind == "input" and surface == "modal":
        p.text(block.get("label"), f"{at}/label", INPUT_LABEL, ("plain_text",))
        if "hint" in block:
            p.text(block["hint"], f"{at}/hint", INPUT_HINT, ("plain_text",))
        _element(p, block.get("element"), f"{at}/element", action_ids)
    else:
        p.add(f"unsupported block type {kind!r} in a {surface}", f"{at}/type")


def message_block_errors(blocks: Any) -> list[str]:
    """Why Slack would answer `invalid_blocks` to these message blocks ([] if it would not)."""
    p = Problems()
    if not isinstance(blocks, list):
        p.add("must be an array", "/blocks")
        return p.errors
    if len(blocks) > MESSAGE_BLOCKS:
        p.add(f"must have no more than {MESSAGE_BLOCKS} items", "/blocks")
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for n, block in enumerate(blocks):
        _block(p, block, f"/blocks/{n}", "message", block_ids, action_ids)
    return p.errors


def view_errors(view: Any) -> list[str]:
    """Why Slack would answer `invalid_arguments` to this modal view ([] if it would not)."""
    p = Problems()
    if not isinstance(view, dict) or view.get("type") != "modal":
        p.add("must be a modal view", "/view/type")
        return p.errors
    p.text(view.get("title"), "/view/title", VIEW_TITLE, ("plain_text",))
    for button in ("submit", "close"):
        if button in view:
            p.text(view[button], f"/view/{button}", VIEW_BUTTON, ("plain_text",))
    p.length(view.get("private_metadata") or None, "/view/private_metadata", PRIVATE_METADATA)
    p.length(view.get("callback_id"), "/view/callback_id", ID_LENGTH)
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        p.add("must be an array", "/view/blocks")
        return p.errors
    if len(blocks) > MODAL_BLOCKS:
        p.add(f"must have no more than {MODAL_BLOCKS} items", "/view/blocks")
    if any(isinstance(b, dict) and b.get("type") == "input" for b in blocks) \
            and "submit" not in view:
        p.add("submit is required when an input block is present", "/view/submit")
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for n, block in enumerate(blocks):
        _block(p, block, f"/view/blocks/{n}", "modal", block_ids, action_ids)
    return p.errors
