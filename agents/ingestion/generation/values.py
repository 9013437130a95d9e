"""Small deterministic value helpers: ids and hashes from parts, IPs, weighted choices, copies, ms times."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Sequence
from typing import Any


def _uuid(*parts: object) -> str:
    digest = hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def _hex(n: int, *parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:n]


def _seed_key(seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"insight:{seed}".encode()).digest()[:8], "big") >> 2


def _ip(rng: random.Random, prefixes: Sequence[str]) -> str:
    prefix = rng.choice(prefixes)
    parts = prefix.split(".")
    while len(parts) < 3:
        parts.append(str(rng.randint(1, 254)))
    return ".".join([*parts, str(rng.randint(2, 253))])


def _weighted(rng: random.Random, pairs: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


def _replace(p: Any, **changes: Any) -> Any:
    values = {f: getattr(p, f) for f in p.__dataclass_fields__}
    values.update(changes)
    return type(p)(**values)


def _ms(t: dt.datetime) -> dt.datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)
