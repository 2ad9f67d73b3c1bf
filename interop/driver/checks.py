"""The check list of a row, and the checks every row shares: the WHIP exchange of a session
(statuses, headers, the SDP answer) and what whipgate's publish page shows."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from .procs import log
from .spec import RowSpec

UUID_RE = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class Checks:
    """Named pass/fail results, logged as they are made, plus free-form notes."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bool, str]] = []
        self.notes: list[str] = []

    def __call__(self, name: str, ok, detail: str = "") -> bool:
        self.items.append((name, bool(ok), detail))
        log(f"  [{'ok' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}")
        return bool(ok)

    def failed(self) -> list[tuple[str, bool, str]]:
        return [c for c in self.items if not c[1]]


def first_line(text: str, prefix: str) -> str:
    return next((line for line in text.splitlines() if line.startswith(prefix)), "")


def media_sections(sdp: str) -> list[tuple[str, list[str]]]:
    """(kind, lines) per m= section of `sdp`, the m= line first."""
    out: list[tuple[str, list[str]]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            out.append((line[2:].split(" ", 1)[0], [line]))
        elif out:
            out[-1][1].append(line)
    return out


def check_whip(check: Checks, spec: RowSpec, r: dict, ingest_id: str, udp_port: int,
               answer_path: Path, prefix: str = "") -> None:
    """The WHIP exchange of one session (the publisher's RESULT `r`); `prefix` names the
    session in the check names."""

    def c(name: str, ok, detail: str = "") -> None:
        check(prefix + name, ok, detail)

    post = r.get("post") or {}
    c("POST 201", post.get("status") == 201, f"{post.get('status')}")
    ctype = (post.get("content_type") or "").split(";")[0].strip().lower()
    c("answer Content-Type application/sdp", ctype == "application/sdp", f"{post.get('content_type')!r}")
    loc = post.get("location") or ""
    c("Location is /whip/<id>/<uuid>, relative",
      re.fullmatch(rf"/whip/{re.escape(ingest_id)}/{UUID_RE}", loc) is not None, repr(loc))
    etag = post.get("etag") or ""
    c("ETag present", bool(etag), repr(etag))
    resolved = r.get("session_url") or ""
    c("Location resolves against the POST URL",
      urlsplit(resolved).path == loc
      and urlsplit(resolved).netloc == urlsplit(post.get("final_url", "")).netloc, resolved)
    c("ICE + DTLS connected", r.get("connection_state") == "connected",
      f"{r.get('connection_state')} after {r.get('connect_millis')} ms")
    if r.get("trickle"):
        patches = r.get("patches") or []
        c("trickle: every PATCH (candidates, end-of-candidates) answered 204",
          bool(patches) and all(x.get("status") == 204 for x in patches),
          ", ".join(f"{x.get('what')}: {x.get('status')}" for x in patches))
        c("trickle: the offer POSTed had no candidates",
          not r.get("offer_candidates"), f"{len(r.get('offer_candidates') or [])}")
        if "trickled_candidates" in r:
            c("trickle: the PATCHes carried the publisher's candidates",
              r["trickled_candidates"] > 0, f"{r['trickled_candidates']}")
        for x in r.get("refused_patches") or []:
            if x.get("want"):
                c(f"trickle: PATCH with {x['what']} refused {x['want']}",
                  x.get("status") == x["want"], f"{x.get('status')} {x.get('body', '')!r}")
            else:
                check.notes.append(f"PATCH with {x['what']} answered {x.get('status')} "
                                   "(the session URL does not check the bearer token)")
    d = r.get("delete") or {}
    c("DELETE 200 (what OBS and FFmpeg 9 accept)", d.get("status") == 200,
      f"{d.get('status')} {d.get('body', '')!r}")

    try:
        answer = answer_path.read_text()
    except OSError:
        answer = ""
    lines = answer.splitlines()
    c("answer is ICE-lite", "a=ice-lite" in lines)
    cands = [x for x in lines if x.startswith("a=candidate:")]
    host = [x for x in cands if re.search(rf" udp \d+ 127\.0\.0\.1 {udp_port} typ host", x, re.I)]
    c("answer has a host candidate on whipgate's UDP port", bool(host),
      f"{len(cands)} candidates: {cands[:3]}")
    c("answer sets up DTLS passive (or actpass → passive)",
      any(x in ("a=setup:passive", "a=setup:active") for x in lines), first_line(answer, "a=setup:"))
    sections = media_sections(answer)
    kinds = [k for k, _ in sections]
    c("answer has one video and one audio section", sorted(kinds) == ["audio", "video"], f"{kinds}")
    for kind, body in sections:
        c(f"answer {kind} is recvonly", "a=recvonly" in body,
          next((x for x in body if x in ("a=sendrecv", "a=sendonly", "a=inactive")), ""))
    video = next((b for k, b in sections if k == "video"), [])
    vcodecs = [x.split(" ", 1)[1].split("/")[0] for x in video if x.startswith("a=rtpmap:")]
    main = [x for x in vcodecs if x.lower() not in ("rtx", "red", "ulpfec")]
    c(f"answer video codec is {spec.encoding} only",
      bool(main) and all(x.upper() == spec.encoding for x in main), f"{vcodecs}")


def check_page(check: Checks, spec: RowSpec, r: dict) -> None:
    """What the publish page itself shows on window.whipgate, against the wire."""
    page, after = r.get("page") or {}, r.get("page_after_stop") or {}
    post = r.get("post") or {}
    # After an ICE restart the page holds the ETag of the PATCH's 200.
    etag = ((r.get("ice_restart") or {}).get("patch") or {}).get("etag") or post.get("etag")
    check("page: httpStatus 201, ETag as sent" + (" (the ICE restart's)" if etag != post.get("etag") else ""),
          page.get("httpStatus") == 201 and page.get("etag") == etag,
          f"{page.get('httpStatus')} {page.get('etag')!r}")
    check(f"page: videoCodec {spec.encoding}, audioCodec opus",
          (page.get("videoCodec") or "").upper() == spec.encoding
          and (page.get("audioCodec") or "").lower() == "opus",
          f"{page.get('videoCodec')!r} {page.get('audioCodec')!r}")
    check("page: bitrate shown > 0", (page.get("bitrateBps") or 0) > 0, f"{page.get('bitrateBps')}")
    d = r.get("delete") or {}
    check("page: Stop sent DELETE to the session URL, deleteStatus 200",
          d.get("url") == r.get("session_url") and after.get("deleteStatus") == 200
          and after.get("state") == "stopped",
          f"{d.get('url')} -> {after.get('deleteStatus')}, state {after.get('state')}")
