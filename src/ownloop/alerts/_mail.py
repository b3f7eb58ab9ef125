"""Sending one mail over ``OWNLOOP_SMTP_URL``: ``smtp://[user:pass@]host:port`` (``?starttls=1``
to upgrade) or ``smtps://`` for implicit TLS. Failures come back as ``OutboundFailed`` naming the
server and the SMTP code, never a crash and never the password."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

from ownloop.outbound import OutboundFailed, OutboundRefused

__all__ = ["SmtpSettings", "send_mail"]


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None

    @property
    def shown(self) -> str:
        return f"SMTP server {self.host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> SmtpSettings:
        """Read an ``smtp://`` or ``smtps://`` URL; a refusal names what is wrong."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise OutboundRefused(f"OWNLOOP_SMTP_URL is not a valid URL: {exc}") from exc
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise OutboundRefused(
                "OWNLOOP_SMTP_URL must look like smtp://[user:pass@]host:port or smtps://...; "
                f"it has scheme '{parts.scheme}'"
            )
        flag = parse_qs(parts.query).get("starttls", ["0"])[-1].lower()
        return cls(
            host=parts.hostname,
            port=port or (465 if parts.scheme == "smtps" else 25),
            implicit_tls=parts.scheme == "smtps",
            starttls=flag in ("1", "true", "yes"),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def send_mail(settings: SmtpSettings, message: EmailMessage, timeout_s: float) -> None:
    """Hand ``message`` to the server; ``OutboundFailed`` (retry) when it refuses or is down."""
    try:
        smtp: smtplib.SMTP
        if settings.implicit_tls:
            smtp = smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                timeout=timeout_s,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=timeout_s)
        with smtp:
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.username:
                smtp.login(settings.username, settings.password or "")
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({code for code, _ in exc.recipients.values()})
        raise OutboundFailed(
            f"{settings.shown} refused the recipient (SMTP {', '.join(map(str, codes))})"
        ) from exc
    except smtplib.SMTPResponseException as exc:
        raise OutboundFailed(
            f"{settings.shown} refused the mail (SMTP {exc.smtp_code})", status_code=exc.smtp_code
        ) from exc
    except (smtplib.SMTPException, OSError) as exc:
        reason = type(exc).__name__
        if isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        raise OutboundFailed(f"{settings.shown} is unreachable or failed: {reason}") from exc
