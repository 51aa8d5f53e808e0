"""What every vault console page shares: reading form fields without losing them, calling
a service off the event loop with its errors turned into the right status, and the
post-redirect-get pattern with a flash message.

Pages answer service errors this way:
- a form the user can fix (ValidationError, ConflictError) is shown again with what they
  typed and the rule that failed, with status 400 or 409;
- anything else (NotFoundError, PermissionDeniedError, ...) goes through :meth:`call`, which
  answers with the error page and the service's message (404 for an object the user may
  not see, the same as one that does not exist).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import tornado.web

from node.errors import LicenceError, StrongroomError, ValidationError
from node.inputs import MAX_TEXT, is_decimal
from web.base import BaseHandler, status_for

P = ParamSpec("P")
T = TypeVar("T")

MAX_LINE = 256


class Refused(tornado.web.HTTPError):
    """A service refused the request; ``message`` is written for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status)
        self.message = message


class ConsolePage(BaseHandler):
    """Base of the vault console's pages (resources, users, policies, admin)."""

    # forms ------------------------------------------------------------------------------

    def field(self, name: str, max_len: int = MAX_LINE, *, strip: bool = True) -> str:
        """A form field as typed (missing: ""). Longer than ``max_len``: ValidationError,
        so the form is shown again rather than the value silently cut."""
        value = self.get_body_argument(name, "", strip=strip)
        if len(value) > max_len:
            label = name.replace("_", " ")
            raise ValidationError(f"{label} is too long (at most {max_len} characters)")
        return value

    def typed_or(self, name: str, current: str, max_len: int = MAX_LINE) -> str:
        """For a form that edits a stored value: what was typed in ``name`` when the page
        answers a POST that carried it (the edit was refused, and must not show the old
        value as if the typing were lost), else ``current``."""
        if self.request.method == "POST" and name in self.request.body_arguments:
            return self.get_body_argument(name, "")[:max_len]
        return current

    def secret_field(self, name: str, max_len: int = MAX_LINE) -> str:
        """A password field: kept exactly as typed (no stripping)."""
        return self.field(name, max_len, strip=False)

    def checkbox(self, name: str) -> bool:
        return self.get_body_argument(name, "") in ("on", "1", "yes", "true")

    def int_field(self, name: str, *, required: bool = True, label: str = "") -> int | None:
        raw = self.get_body_argument(name, "").strip()
        if not raw:
            if required:
                raise ValidationError(f"{label or name.replace('_', ' ')} is required")
            return None
        if not is_decimal(raw) or len(raw) > 9:
            raise ValidationError(f"{label or name.replace('_', ' ')} must be a whole number")
        return int(raw)

    def int_list(self, name: str) -> list[int]:
        out: list[int] = []
        for raw in self.get_body_arguments(name):
            if not is_decimal(raw.strip()) or len(raw.strip()) > 9:
                raise ValidationError(f"{name.replace('_', ' ')}: not a valid choice")
            out.append(int(raw))
        return out

    def _attribute_keys(self, prefix: str) -> list[tuple[str, str]]:
        """(form key, field name) of the ``attr_<name>`` fields posted. Tornado reads a
        form's keys as Latin-1, its values as UTF-8: a name with other letters than ASCII
        (``Numéro``) is turned back into what the browser sent."""
        out = []
        for key in self.request.body_arguments:
            if key.startswith(prefix):
                try:
                    name = key[len(prefix) :].encode("latin-1").decode("utf-8")
                except (UnicodeEncodeError, UnicodeDecodeError):
                    raise ValidationError("a custom field's name was not sent as UTF-8") from None
                out.append((key, name))
        return out

    def custom_fields(self, prefix: str = "attr_") -> dict[str, str]:
        """Custom attributes posted as ``attr_<name>`` fields. Cut off here at MAX_TEXT only:
        the service refuses a value over its own limit with the field's name."""
        return {name: self.field(key, MAX_TEXT) for key, name in self._attribute_keys(prefix)}

    @staticmethod
    def object_id(text: str) -> int:
        """A numeric id from the path; an impossible one is simply not found."""
        if not is_decimal(text) or len(text) > 9 or int(text) < 1:
            raise Refused(404, "No such object.")
        return int(text)

    def typed_attributes(self, prefix: str = "attr_") -> dict[str, str]:
        """Custom attributes as typed, for showing a form again."""
        try:
            keys = self._attribute_keys(prefix)
        except ValidationError:
            return {}
        return {name: self.get_body_argument(key, "")[:MAX_TEXT] for key, name in keys}

    # services ---------------------------------------------------------------------------

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a service call off the loop; a refusal becomes the error page."""
        try:
            return await self.run(fn, *args, **kwargs)
        except StrongroomError as exc:
            raise Refused(status_for(exc), str(exc)) from None

    async def attempt(
        self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> tuple[T | None, str | None]:
        """Run a service call whose ValidationError or ConflictError the user can fix (or
        whose LicenceError they should read beside what they typed): returns (result, None)
        or (None, message) and sets the status. Other refusals become the error page."""
        try:
            return await self.run(fn, *args, **kwargs), None
        except StrongroomError as exc:
            status = status_for(exc)
            if status not in (400, 409) and not isinstance(exc, LicenceError):
                raise Refused(status, str(exc)) from None
            self.set_status(status)
            return None, str(exc)

    # answers ----------------------------------------------------------------------------

    def done(self, message: str, to: str) -> None:
        """Post-redirect-get with a flash message."""
        self.flash(message)
        self.redirect(to)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], Refused):
            self.audit_refusal(status_code, exc_info[1].message)
            self.render("error.html", status=status_code, message=exc_info[1].message)
            return
        super().write_error(status_code, **kwargs)

    def refuse(self, template: str, message: str, status: int = 400, **kwargs: Any) -> None:
        """Show a form again with what the user typed and the rule that failed."""
        if self.get_status() < 400:
            self.set_status(status)
        self.render(template, error=message, **kwargs)


class NamedGroupListPage(ConsolePage, abc.ABC):
    """A list of named groups (resource groups, user groups) with a form to add one. A
    subclass names its template, noun and path, lists and creates through its service, and
    declares the actions of its own ``get`` and ``post`` (which call :meth:`show` and
    :meth:`create`)."""

    template = ""
    noun = ""
    path = ""

    @abc.abstractmethod
    async def list_groups(self) -> list[Any]:
        """The groups the user may see (through :meth:`call`)."""

    @abc.abstractmethod
    async def create_group(self, name: str, description: str) -> tuple[int | None, str | None]:
        """Create one (through :meth:`attempt`): (new id, None) or (None, message)."""

    async def show(self, error: str | None = None) -> None:
        typed = error is not None
        self.render(
            self.template,
            groups=await self.list_groups(),
            error=error,
            name=self.get_body_argument("name", "")[:128] if typed else "",
            description=self.get_body_argument("description", "")[:512] if typed else "",
        )

    async def create(self) -> None:
        try:
            name = self.field("name", 128)
            description = self.field("description", 512)
        except ValidationError as exc:
            self.set_status(400)
            await self.show(str(exc))
            return
        gid, error = await self.create_group(name, description)
        if gid is None:
            await self.show(error)
            return
        self.done(f"{self.noun} '{name}' added.", f"{self.path}/{gid}")
