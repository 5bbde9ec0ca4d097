"""Who may talk to the webhook: a bearer token and/or HTTP basic auth.

Secrets are read once, when the app is built (`Authenticator.from_config`), from the
environment ($PRESHIFT_WEBHOOK_TOKEN, $PRESHIFT_WEBHOOK_PASSWORD) or the files the
configuration names, and compared with `hmac.compare_digest` so the time of a comparison
says nothing about the secret. They are never logged and never put in an error message.
Without any secret the app refuses to start unless `webhook.allow_unauthenticated` is true.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from preshift.config import WebhookConfig, read_secret
from preshift.errors import ConfigError

TOKEN_ENV = "PRESHIFT_WEBHOOK_TOKEN"
PASSWORD_ENV = "PRESHIFT_WEBHOOK_PASSWORD"
REALM = "preshift"


@dataclass(frozen=True)
class Authenticator:
    """Checks an `Authorization` header. No secret at all = everyone is allowed."""

    token: bytes | None = field(default=None, repr=False)
    basic_user: bytes | None = None
    basic_password: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, cfg: WebhookConfig, environ: Mapping[str, str]) -> Authenticator:
        """Read the secrets; ConfigError when they are inconsistent or missing."""
        token = read_secret(environ, TOKEN_ENV, cfg.token_file)
        password = read_secret(environ, PASSWORD_ENV, cfg.basic_password_file)
        if token is not None and not token:
            raise ConfigError(f"webhook.token_file {cfg.token_file} is empty; put the token in it")
        if cfg.basic_user is not None:
            if not cfg.basic_user or ":" in cfg.basic_user:
                raise ConfigError("webhook.basic_user must be non-empty and contain no ':'")
            if not password:
                raise ConfigError(
                    "webhook.basic_user is set but there is no password: set "
                    f"${PASSWORD_ENV} or webhook.basic_password_file"
                )
        elif password is not None:
            raise ConfigError(
                f"a basic-auth password is given (${PASSWORD_ENV} or "
                "webhook.basic_password_file) but webhook.basic_user is not set; set it"
            )
        auth = cls(
            token=token.encode() if token else None,
            basic_user=cfg.basic_user.encode() if cfg.basic_user else None,
            basic_password=password.encode() if password and cfg.basic_user else None,
        )
        if not auth.enabled and not cfg.allow_unauthenticated:
            raise ConfigError(
                "the webhook has no authentication configured: set $"
                f"{TOKEN_ENV} or webhook.token_file (bearer token), or webhook.basic_user "
                f"with ${PASSWORD_ENV} or webhook.basic_password_file; or, on a trusted "
                "network only, webhook.allow_unauthenticated: true"
            )
        return auth

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.basic_user is not None

    @property
    def schemes(self) -> tuple[str, ...]:
        out = []
        if self.token is not None:
            out.append("Bearer")
        if self.basic_user is not None:
            out.append("Basic")
        return tuple(out)

    def challenges(self) -> list[str]:
        """`WWW-Authenticate` values for a 401, one per accepted scheme."""
        return [f'{s} realm="{REALM}"' for s in self.schemes]

    def check(self, authorization: str | None) -> bool:
        """True when the header carries a valid credential (always True without secrets)."""
        if not self.enabled:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and self.token is not None:
            return hmac.compare_digest(value.encode(), self.token)
        if scheme == "basic" and self.basic_user is not None and self.basic_password:
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return False
            user, sep, password = decoded.partition(b":")
            # both compared every time: which part was wrong does not show in the timing
            ok_user = hmac.compare_digest(user, self.basic_user)
            ok_password = hmac.compare_digest(password, self.basic_password)
            return bool(sep) and ok_user and ok_password
        return False
