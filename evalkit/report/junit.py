"""JUnit XML: every case × model (and variant) as a test, so any CI shows failures natively.

One `<testsuite>` per model and variant, one `<testcase>` per case in it (and, when the run
was judged by a gate, a `SUITE.gate` testsuite with a test per rule and model): a `<failure>` with
the check reasons when the case failed (by compare.case_outcomes' rule: fewer than half of
its kept samples passed), an `<error>` when every kept sample was a failed request. Model
text can hold characters XML 1.0 forbids; they are replaced, so the file always parses.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from evalkit.report import records

if TYPE_CHECKING:
    from evalkit.report import RunReport

MAX_TEXT = 1000  # characters of output kept in a failure's body
_INVALID_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def render_junit(report: RunReport) -> str:
    """The run as a JUnit XML document."""
    frame = report.frame
    kept = frame[frame["selected"].fillna(True).astype(bool)]
    columns = ["case_id", "model", "variant", "passed", "latency_s", "output"]
    columns += ["check_reasons", "error_type", "error"]
    cases: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for record in records(kept[columns]):
        key = (str(record["model"]), str(record["variant"]))
        cases.setdefault(key, {}).setdefault(str(record["case_id"]), []).append(record)
    root = ET.Element("testsuites", name=_clean(report.suite))
    totals = {"tests": 0, "failures": 0, "errors": 0, "time": 0.0}
    for key in report.label_keys.values():
        suite = _testsuite(report.suite, key, cases.get(key, {}))
        root.append(suite)
        for attribute in ("tests", "failures", "errors"):
            totals[attribute] += int(suite.get(attribute, "0"))
        totals["time"] += float(suite.get("time", "0"))
    if report.gates is not None:
        gate = _gate_suite(report)
        root.append(gate)
        totals["tests"] += len(report.gates)
        totals["failures"] += int(gate.get("failures", "0"))
    for attribute, value in totals.items():
        root.set(attribute, f"{value:.3f}" if attribute == "time" else str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _testsuite(
    suite_name: str, key: tuple[str, str], cases: dict[str, list[dict[str, Any]]]
) -> ET.Element:
    """One model (and variant): suite.model[.variant], the classname of its tests."""
    model, variant = key
    classname = _clean(".".join(p for p in (suite_name, model, variant) if p))
    suite = ET.Element("testsuite", name=classname)
    failures = errors = 0
    elapsed = 0.0
    for case_id, samples in cases.items():
        seconds = sum(_number(s["latency_s"]) for s in samples)
        elapsed += seconds
        test = ET.SubElement(
            suite, "testcase", name=_clean(case_id), classname=classname, time=f"{seconds:.3f}"
        )
        passed = [bool(s["passed"]) if _present(s["passed"]) else False for s in samples]
        if sum(passed) / len(passed) >= 0.5:
            continue
        failed = [s for s, ok in zip(samples, passed, strict=True) if not ok]
        if all(_present(s["error_type"]) for s in samples):
            errors += 1
            text = _clean(str(samples[0]["error"]))
            kind = _clean(str(samples[0]["error_type"]))
            ET.SubElement(test, "error", message=text[:1000], type=kind).text = text
            continue
        failures += 1
        answered = next((s for s in failed if not _present(s["error_type"])), failed[0])
        reasons = _reasons(answered["check_reasons"])
        if _present(answered["error_type"]):
            reasons.append(("request failed", f"{answered['error_type']}: {answered['error']}"))
        message = "; ".join(f"{check}: {why}" for check, why in reasons) or "failed"
        failure = ET.SubElement(test, "failure", message=_clean(message)[:1000], type="check")
        output = answered["output"] if _present(answered["output"]) else ""
        body = [f"{sum(passed)} of {len(passed)} sample(s) passed"] if len(passed) > 1 else []
        body += [f"{check}: {why}" for check, why in reasons]
        body += ["", "output:", str(output)[:MAX_TEXT]]
        failure.text = _clean("\n".join(body))
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", "0")
    suite.set("time", f"{elapsed:.3f}")
    return suite


def _gate_suite(report: RunReport) -> ET.Element:
    """The gate as tests of their own: one per rule and what it judged, failing as it did."""
    classname = _clean(f"{report.suite}.gate")
    suite = ET.Element("testsuite", name=classname)
    failures = 0
    for outcome in report.gates or []:
        name = _clean(f"{outcome.gate} {outcome.subject}")
        test = ET.SubElement(suite, "testcase", name=name, classname=classname, time="0.000")
        if not outcome.held:
            failures += 1
            reason = _clean(outcome.reason)
            ET.SubElement(test, "failure", message=reason[:1000], type="gate").text = reason
        else:
            ET.SubElement(test, "system-out").text = _clean(outcome.reason)
    for attribute, value in (("tests", len(report.gates or [])), ("failures", failures)):
        suite.set(attribute, str(value))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    suite.set("time", "0.000")
    return suite


def _reasons(value: Any) -> list[tuple[str, str]]:
    if not _present(value):
        return []
    try:
        parsed = json.loads(str(value))
    except ValueError:
        return [("checks", str(value))]
    return [(str(k), str(v)) for k, v in parsed.items()] if isinstance(parsed, dict) else []


def _present(value: Any) -> bool:
    import pandas as pd

    return value is not None and not (not isinstance(value, str) and pd.isna(value))


def _number(value: Any) -> float:
    return float(value) if _present(value) else 0.0


def _clean(text: str) -> str:
    """Text XML 1.0 can hold: forbidden characters become U+FFFD."""
    return _INVALID_XML.sub("\ufffd", text)
