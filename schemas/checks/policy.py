"""Copy policy: what a model wrote that a person should look at before it ships.

:func:`check_copy` returns :class:`PolicyFlag` s with stable rule ids:

``banned_term``        a global or tenant banned term
``claim.guarantee``    "guaranteed", "risk-free", "no risk"
``claim.medical``      "cures", "heals", "clinically proven", "FDA approved"
``claim.superlative``  "#1", "number one", "best in the world"
``contact.url``        a link or bare domain not on the tenant's allow-list
``contact.email``      an e-mail address whose domain is not allowed
``contact.phone``      a phone number
``contact.handle``     an @handle not on the tenant's allow-list

Matching runs on a *folded* copy of the text, so disguises do not hide a
term: compatibility forms (fullwidth, ligatures, ``ℓ``) and accents are
folded away (NFKD, marks dropped), invisible characters (zero-width, bidi,
other format and control characters) are removed, Cyrillic and Greek
letters that look Latin are read as Latin (a table drawn from Unicode's
confusables.txt, Latin targets only), case is folded, and banned terms also
match spaced out ("f r e e", "f.r.e.e"). Each flag's ``span`` and
``match`` point into the original text.

:func:`clean_brand_voice` makes a tenant's brand-voice text safe to quote in
a prompt, or refuses it (``invalid_request``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from schemas.errors import ErrorCode, PermanentError

BRAND_VOICE_MAX_CHARS: Final = 200
GLOBAL_BANNED_TERMS: Final = (
    "get rich quick",
    "free money",
    "click here",
    "buy followers",
    "double your money",
)

# Look-alikes read as Latin, before case folding (so Cyrillic Н is H, н stays).
_CONFUSABLES: Final = str.maketrans(
    {
        # Cyrillic capitals
        "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O",
        "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I",
        "Ј": "J", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y", "Ӏ": "l", "Ь": "b", "Ԁ": "D",
        # Cyrillic small
        "а": "a", "е": "e", "г": "r", "к": "k", "о": "o", "п": "n", "р": "p",
        "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "һ": "h",
        "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ү": "y", "ь": "b", "ѵ": "v",
        # Greek capitals
        "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K",
        "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
        "Ϲ": "C", "Ϳ": "J",
        # Greek small
        "α": "a", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u",
        "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
        "ϲ": "c", "ϳ": "j",
        # Latin and punctuation look-alikes that NFKD keeps
        "ı": "i", "ȷ": "j", "ɡ": "g", "ǀ": "l", "\u2019": "'", "\u2018": "'",
        "\u02bc": "'", "\u2010": "-", "\u2011": "-", "\u2013": "-", "\u2014": "-",
    }
)  # fmt: skip
_DROPPED_CATEGORIES: Final = frozenset({"Mn", "Me", "Cf", "Cc", "Cs", "Co", "Cn"})

_TLDS: Final = (
    "com|net|org|io|co|ai|app|dev|shop|store|biz|info|me|ly|gg|xyz|online|site|link|"
    "club|live|tv|us|uk|de|fr|es|it|nl|ru|cn|in|br|au|ca|eu|ch|jp|page|gl|to|bit"
)
_CLAIMS: Final = (
    (
        "claim.guarantee",
        "guarantee or no-risk claim",
        re.compile(
            r"\bguarantee[ds]?\b|\brisk[\s-]*free\b|\b(?:no|zero)[\s-]+risks?\b"
            r"|\b100\s*%\s*(?:safe|effective|guaranteed)\b"
        ),
    ),
    (
        "claim.medical",
        "medical or health claim",
        re.compile(
            r"\bcures?\b|\bheals?\b|\bhealing\b|\bclinically[\s-]+proven\b"
            r"|\bfda[\s-]+approved\b|\bmiracle\b"
            r"|\b(?:prevents?|treats?|reverses?)\s+(?:cancer|diabetes|covid|depression|"
            r"anxiety|disease|illness|infections?)\b"
            r"|\blose\s+\d+\s*(?:lbs?|pounds|kg|kilos)\b"
        ),
    ),
    (
        "claim.superlative",
        "unverifiable superlative",
        re.compile(
            r"#\s*1\b|\bno(?:\.\s*|)1\b|\bnumber\s+one\b|\bbest\s+in\s+the\s+world\b"
            r"|\bworld'?s\s+best\b|\bbest\s+ever\b|\bunbeatable\b"
        ),
    ),
)
_EMAIL: Final = re.compile(
    r"[\w.+-]+@(?:[^\W_][\w-]*\.)+[a-z]{2,}\b"
    r"|\b[\w.+-]+\s*[\[(]\s*at\s*[\])]\s*[\w-]+\s*(?:[\[(]\s*dot\s*[\])]|\.)\s*[a-z]{2,}\b"
)
_URL: Final = re.compile(
    r"\b(?:https?://|www\.)[^\s<>\"']+"
    rf"|(?<![\w@.-])(?:[^\W_](?:[\w-]{{0,61}}[^\W_])?\.)+(?:{_TLDS})\b(?![\w-])(?:/[^\s<>\"']*)?"
    rf"|\b[\w-]+\s*(?:[\[(]\s*(?:\.|dot)\s*[\])]|\s+dot\s+)\s*(?:{_TLDS})\b"
)
_PHONE: Final = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,5}"  # international
    r"|\(?\d{3}\)?[\s.-]?\d{3}[\s.-]\d{4}"  # North American
    r"|0\d{2,4}[\s-]\d{3,4}[\s-]?\d{3,4}"  # national trunk prefix
    r")(?!\w)"
)
_HANDLE: Final = re.compile(r"(?<![\w@.])@([a-z0-9_](?:[a-z0-9_.]{0,28}[a-z0-9_])?)(?![\w@])")
_SEPARATORS: Final = r"[\W_]{1,3}"

# Brand voice: model-template control tokens and instruction overrides.
_CHAT_TOKENS: Final = re.compile(
    r"<\|[^|<>]{0,40}\|>|<<\s*/?\s*SYS\s*>>|\[\s*/?\s*INST\s*\]|</?s>"
    r"|<\s*/?\s*[A-Za-z_][\w:-]{0,40}\s*>",
    re.IGNORECASE,
)
_INSTRUCTION_OVERRIDE: Final = re.compile(
    r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+)?(?:the\s+|your\s+)?"
    r"(?:previous|prior|above|earlier|preceding|system|original)\s+"
    r"(?:instructions?|prompts?|rules|directions|messages?)\b"
    r"|\bsystem\s+prompt\b|\byou\s+are\s+now\b|\bnew\s+instructions?\b"
)


@dataclass(frozen=True, slots=True)
class PolicyFlag:
    """One finding. ``span`` indexes the original text; ``match`` is that slice."""

    rule_id: str
    message: str
    match: str
    span: tuple[int, int]


@dataclass(frozen=True, slots=True)
class _Folded:
    text: str
    origin: tuple[int, ...]  # for each folded character, its index in the original

    def span(self, start: int, end: int) -> tuple[int, int]:
        return (self.origin[start], self.origin[end - 1] + 1)


def check_copy(
    text: str,
    *,
    banned_terms: Iterable[str] = (),
    allow_domains: Iterable[str] = (),
    allow_handles: Iterable[str] = (),
) -> list[PolicyFlag]:
    """Every policy finding in ``text``, in order of position."""
    folded = _fold(text)
    flags = [*_banned(text, folded, (*GLOBAL_BANNED_TERMS, *banned_terms))]
    for rule_id, message, pattern in _CLAIMS:
        flags.extend(
            _flag(text, folded, m, rule_id, message) for m in pattern.finditer(folded.text)
        )
    flags.extend(_contacts(text, folded, allow_domains=allow_domains, allow_handles=allow_handles))
    return sorted(set(flags), key=lambda f: (f.span, f.rule_id))


def clean_brand_voice(text: str) -> str:
    """Tenant brand-voice text, safe to quote in a prompt.

    Drops control, bidi, zero-width and other invisible characters, and
    chat-template control tokens (``<|im_start|>``, ``[INST]``, ``<image>``);
    NFKC-normalises; collapses all whitespace (newlines included) to single
    spaces. Refuses (``invalid_request``) text over
    :data:`BRAND_VOICE_MAX_CHARS` after cleaning, and text that tries to
    override the model's instructions ("ignore previous instructions").
    """
    normal = unicodedata.normalize("NFKC", text)
    visible = "".join(
        " " if ch.isspace() else ch
        for ch in normal
        if ch.isspace() or unicodedata.category(ch) not in _DROPPED_CATEGORIES
    )
    cleaned = " ".join(_CHAT_TOKENS.sub(" ", visible).split())
    if len(cleaned) > BRAND_VOICE_MAX_CHARS:
        raise PermanentError(
            f"brand voice is {len(cleaned)} characters; at most {BRAND_VOICE_MAX_CHARS}",
            code=ErrorCode.invalid_request,
        )
    if _INSTRUCTION_OVERRIDE.search(_spaced(_fold(cleaned).text)):
        raise PermanentError(
            "brand voice reads as instructions to the model; describe a tone instead",
            code=ErrorCode.invalid_request,
        )
    return cleaned


def _fold(text: str) -> _Folded:
    chars: list[str] = []
    origin: list[int] = []
    for index, ch in enumerate(text):
        folded = _fold_char(ch)
        chars.append(folded)
        origin.extend([index] * len(folded))
    return _Folded("".join(chars), tuple(origin))


@lru_cache(maxsize=65536)
def _fold_char(ch: str) -> str:
    """One character folded: white space to a space; decomposed, without marks and
    invisible characters, look-alikes mapped, case folded."""
    if ch.isspace():
        return " "
    return "".join(
        part.translate(_CONFUSABLES).casefold()
        for part in unicodedata.normalize("NFKD", ch)
        if unicodedata.category(part) not in _DROPPED_CATEGORIES
    )


def _spaced(text: str) -> str:
    return " ".join(text.split())


@lru_cache(maxsize=4096)
def _term_pattern(term: str) -> re.Pattern[str] | None:
    words = _fold(term).text.split()
    if not words:
        return None
    tight = r"\s+".join(re.escape(word) for word in words)
    letters = [c for c in "".join(words) if c.isalnum()]
    spaced = _SEPARATORS.join(re.escape(c) for c in letters) if len(letters) > 1 else tight
    return re.compile(rf"(?<![^\W_])(?:{tight}|{spaced})(?![^\W_])")


def _banned(text: str, folded: _Folded, terms: Iterable[str]) -> Iterator[PolicyFlag]:
    for term in dict.fromkeys(terms):
        pattern = _term_pattern(term)
        if pattern is None:
            continue
        for match in pattern.finditer(folded.text):
            yield _flag(text, folded, match, "banned_term", f"banned term {term!r}")


def _contacts(
    text: str, folded: _Folded, *, allow_domains: Iterable[str], allow_handles: Iterable[str]
) -> Iterator[PolicyFlag]:
    domains = {_bare_domain(d) for d in allow_domains if d.strip()}
    handles = {h.strip().lstrip("@").casefold() for h in allow_handles if h.strip()}
    taken: list[tuple[int, int]] = []
    detectors: tuple[tuple[str, str, re.Pattern[str], Callable[[str], bool]], ...] = (
        (
            "contact.email",
            "e-mail address not on the allow-list",
            _EMAIL,
            lambda s: _domain_allowed(s.rpartition("@")[2], domains),
        ),
        (
            "contact.url",
            "link or domain not on the allow-list",
            _URL,
            lambda s: _domain_allowed(_url_host(s), domains),
        ),
        ("contact.phone", "phone number", _PHONE, lambda s: False),
        (
            "contact.handle",
            "@handle not on the allow-list",
            _HANDLE,
            lambda s: s.lstrip("@").casefold() in handles,
        ),
    )
    for rule_id, message, pattern, allowed in detectors:
        for match in pattern.finditer(folded.text):
            if any(match.start() < end and start < match.end() for start, end in taken):
                continue
            taken.append(match.span())
            flag = _flag(text, folded, match, rule_id, message)
            # Allow-lists compare what was written, not the folded form: a
            # Cyrillic look-alike of an allowed domain is not that domain.
            if not allowed(unicodedata.normalize("NFKC", flag.match).casefold()):
                yield flag


def _flag(
    text: str, folded: _Folded, match: re.Match[str], rule_id: str, message: str
) -> PolicyFlag:
    start, end = folded.span(*match.span())
    return PolicyFlag(rule_id=rule_id, message=message, match=text[start:end], span=(start, end))


def _url_host(url: str) -> str:
    rest = re.sub(r"^[a-z][a-z0-9+.-]*://", "", url.strip())
    return re.split(r"[/?#:\s]", rest, maxsplit=1)[0]


def _bare_domain(domain: str) -> str:
    host = _url_host(domain.casefold()).rstrip(".")
    return host.removeprefix("*.").removeprefix("www.")


def _domain_allowed(host: str, allowed: Sequence[str] | set[str]) -> bool:
    host = _bare_domain(host)
    return any(host == d or host.endswith("." + d) for d in allowed)
