"""Loading exchange specs: YAML -> schema check (``bitty.spec.schema``) -> semantic checks -> the
frozen, compiled ``Spec`` of ``bitty.spec.model``.

This is the one loader: ``bitty validate`` and ``bitty collect`` both call ``load_spec``. Every
problem is collected (not just the first) and located at ``file:line:col`` through the node marks
of ``yaml.compose``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from bitty.errors import BittyError, Problem, SpecError
from bitty.lang.expr import Expr, ExpressionError, compile_expression
from bitty.spec import files as paths
from bitty.spec import params as spec_params
from bitty.spec.hooks import Hooks
from bitty.spec.model import (
    CONNECTION_VARS,
    REST_TRADES_VARS,
    TRADE_FIELDS,
    Bootstrap,
    Heartbeat,
    Keepalive,
    MessageKind,
    Pong,
    RestTrades,
    Spec,
    Subscribe,
    SymbolList,
)
from bitty.spec.schema import Report, locate, schema, shape_problems
from bitty.spec.symbols import SymbolRules
from bitty.spec.template import Template

# Optional expressions of symbols.list describing each instrument (kind, expiry, contract...).
LISTING_FIELDS = ("kind", "settle", "expiry", "strike", "right", "contract_size", "inverse", "size_unit")

__all__ = ["MessageKind", "RestTrades", "Spec", "find_spec", "load_spec", "parse_spec", "schema", "spec_files", "spec_paths"]


# --- building ---------------------------------------------------------------------------------


class _Builder:
    """Compiles the raw (schema-valid) mapping, recording every semantic problem."""

    def __init__(self, raw: dict[str, Any], report: Report, shape_ok: bool = True) -> None:
        self.raw = raw
        self.report = report
        # Cross-field checks on a spec whose shape is wrong would only echo the shape errors.
        self.shape_ok = shape_ok

    def expr(self, path: list[Any], source: str | None) -> Expr | None:
        if source is None:
            return None
        try:
            return compile_expression(source)
        except ExpressionError as exc:
            self.report.add(path, str(exc))
            return None

    def trade_fields(self, path: list[Any], raw: dict[str, Any]) -> list[tuple[str, Expr]]:
        """The trade fields ``raw`` gives, compiled, in TRADE_FIELDS order."""
        fields = []
        for name in TRADE_FIELDS:
            if name in raw:
                e = self.expr(path + [name], raw[name])
                if e is not None:
                    fields.append((name, e))
        return fields

    def template(self, path: list[Any], source: Any, allowed: set[str]) -> Template | None:
        try:
            template = Template.compile(source)
        except ExpressionError as exc:
            self.report.add(path, str(exc))
            return None
        unknown = sorted(template.variables() - allowed)
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.report.add(path, f"template uses unknown variable {name!r}{hint}; available here: {', '.join(sorted(allowed))}")
        return template

    def templates(self, path: list[Any], sources: list[Any], allowed: set[str]) -> tuple[Template, ...]:
        out = []
        for i, source in enumerate(sources):
            template = self.template(path + [i], source, allowed)
            if template is not None:
                out.append(template)
        return tuple(out)

    def build(self, file: Path) -> Spec | None:
        raw = self.raw
        problems_before = len(self.report.problems)
        symbols_raw = raw["symbols"]
        rules = self.symbol_rules(symbols_raw)
        subscribe_raw = raw["subscribe"]
        per = subscribe_raw.get("per", "connection")
        connection_vars = set(CONNECTION_VARS) if "bootstrap" in raw else CONNECTION_VARS - {"bootstrap"}
        sub_vars = (connection_vars - {"symbols"}) | {"symbol"} if per == "symbol" else connection_vars
        if per == "batch" and "batch_size" not in subscribe_raw:
            self.report.add(["subscribe"], "per: batch needs batch_size")
        subscribe = Subscribe(per, subscribe_raw.get("batch_size"),
                              self.templates(["subscribe", "messages"], subscribe_raw["messages"], sub_vars))
        url_vars = {"symbols", "connect_id"} | ({"bootstrap"} & connection_vars)
        url = self.template(["url"], raw["url"], url_vars)
        heartbeat = self.heartbeat(raw.get("heartbeat"), sub_vars)
        messages = self.messages(raw["messages"])
        keepalive = None
        if "keepalive" in raw:
            message = self.template(["keepalive", "message"], raw["keepalive"]["message"],
                                    {"id", "now_ms", "now_s", "connect_id"})
            if message is not None:
                keepalive = Keepalive(float(raw["keepalive"]["interval"]), message)
        pong = None
        if "pong" in raw:
            match = self.expr(["pong", "match"], raw["pong"]["match"])
            reply = self.template(["pong", "reply"], raw["pong"]["reply"], {"frame", "id", "now_ms", "now_s", "connect_id"})
            if match is not None and reply is not None:
                pong = Pong(match, reply)
        bootstrap = None
        if "bootstrap" in raw:
            b = raw["bootstrap"]
            b_url = self.template(["bootstrap", "url"], b["url"], {"connect_id", "now_ms"})
            interval = self.expr(["bootstrap", "keepalive_interval"], b.get("keepalive_interval"))
            if b_url is not None:
                bootstrap = Bootstrap(b_url, b.get("method", "GET"), interval)
        symbol_list = self.symbol_list(symbols_raw.get("list"))
        connection = raw.get("connection", {})
        trade_timeout = raw.get("trade_timeout")
        idle_timeout = float(raw.get("idle_timeout", 60))
        if self.shape_ok:
            self.check_timeouts(raw.get("heartbeat"), trade_timeout, idle_timeout, keepalive)
        hooks = raw.get("hooks")
        if hooks:
            self.check_hooks(hooks)
        rest_trades = self.rest_trades(raw.get("rest", {}).get("trades"))
        if len(self.report.problems) > problems_before or url is None or rules is None:
            return None
        return Spec(
            name=raw["name"],
            version=int(raw.get("version", 1)),
            path=file,
            url=url,
            symbols=rules,
            default_symbols=tuple(symbols_raw["default"]),
            subscribe=subscribe,
            messages=messages,
            heartbeat=heartbeat,
            trade_timeout=float(trade_timeout) if trade_timeout is not None else None,
            idle_timeout=idle_timeout,
            keepalive=keepalive,
            pong=pong,
            compression=raw.get("compression", "auto"),
            bootstrap=bootstrap,
            symbol_list=symbol_list,
            max_symbols=connection.get("max_symbols"),
            max_frame_bytes=int(connection.get("max_frame_bytes", 4 * 1024 * 1024)),
            messages_per_second=connection.get("messages_per_second"),
            max_age=connection.get("max_age"),
            headers=tuple(sorted(connection.get("headers", {}).items())),
            hooks=hooks,
            description=raw.get("description", ""),
            docs=raw.get("docs", ""),
            trade_ids=raw.get("trade_ids", "opaque"),
            rest_trades=rest_trades,
        )

    def symbol_rules(self, raw: dict[str, Any]) -> SymbolRules | None:
        native = raw["native"]
        if "{base}" not in native or "{quote}" not in native:
            self.report.add(["symbols", "native"], "must contain both {base} and {quote}")
            return None
        if "{base}{quote}" in native and not raw.get("quotes") and not raw.get("map"):
            self.report.add(["symbols", "native"],
                            "{base}{quote} has no separator: list the exchange's quote assets in symbols.quotes "
                            "so native symbols can be split")
        return SymbolRules(
            native_format=native,
            case=raw.get("case", "upper"),
            aliases=dict(raw.get("aliases", {})),
            quotes=tuple(raw.get("quotes", ())),
            suffix=raw.get("suffix"),
            explicit=dict(raw.get("map", {})),
        )

    def symbol_list(self, raw: dict[str, Any] | None) -> SymbolList | None:
        if raw is None:
            return None
        p = ["symbols", "list"]
        records = self.expr(p + ["records"], raw["records"])
        native = self.expr(p + ["native"], raw["native"])
        base = self.expr(p + ["base"], raw.get("base"))
        quote = self.expr(p + ["quote"], raw.get("quote"))
        filter_ = self.expr(p + ["filter"], raw.get("filter"))
        more = {name: self.expr(p + [name], raw.get(name)) for name in LISTING_FIELDS}
        if records is None or native is None:
            return None
        urls = tuple(raw["url"]) if isinstance(raw["url"], list) else (raw["url"],)
        return SymbolList(urls[0], records, native, base, quote, filter_, urls=urls, **more)

    def rest_trades(self, raw: dict[str, Any] | None) -> RestTrades | None:
        if raw is None:
            return None
        p = ["rest", "trades"]
        url = self.template(p + ["url"], raw["url"], REST_TRADES_VARS)
        records = self.expr(p + ["records"], raw["records"])
        fields = self.trade_fields(p + ["fields"], raw["fields"])
        paginate = raw.get("paginate", {})
        by = paginate.get("by", "none")
        if (by == "cursor") != ("cursor" in paginate):
            self.report.add(p + ["paginate"], "paginate.cursor is needed with by: cursor, and only then")
        rate = raw.get("rate", {})
        if url is None or records is None:
            return None
        return RestTrades(url, records, tuple(fields), error=self.expr(p + ["error"], raw.get("error")),
                          paginate=by, cursor=self.expr(p + ["paginate", "cursor"], paginate.get("cursor")),
                          page_size=paginate.get("page_size"), max_pages=int(paginate.get("max_pages", 100)),
                          per_second=float(rate.get("per_second", 1)), retries=int(rate.get("retries", 5)))

    def heartbeat(self, raw: dict[str, Any] | None, sub_vars: set[str]) -> Heartbeat | None:
        if raw is None:
            return None
        p = ["heartbeat"]
        match = self.expr(p + ["match"], raw["match"])
        if raw.get("symbol") and raw.get("channel"):
            self.report.add(p, "give either symbol or channel, not both")
        heartbeat = Heartbeat(
            match=match,  # type: ignore[arg-type]
            timeout=float(raw["timeout"]),
            messages=self.templates(p + ["messages"], raw.get("messages", []), sub_vars | {"symbols"}),
            symbol=self.expr(p + ["symbol"], raw.get("symbol")),
            channel=self.expr(p + ["channel"], raw.get("channel")),
            last_trade_id=self.expr(p + ["last_trade_id"], raw.get("last_trade_id")),
            trades_count=bool(raw.get("trades_count", False)),
        )
        return heartbeat if match is not None else None

    def messages(self, raw: dict[str, Any]) -> tuple[MessageKind, ...]:
        out = []
        has_trade = False
        has_channel = False
        for name, m in raw.items():
            p = ["messages", name]
            kind = m["type"]
            match = self.expr(p + ["match"], m["match"])
            if kind == "trade":
                has_trade = True
                fields = self.trade_fields(p + ["fields"], m["fields"])
                if "symbol" not in m["fields"] and "channel" not in m:
                    self.report.add(p + ["fields"],
                                    "a trade kind needs fields.symbol, or a channel resolved through a `channel` kind")
                kind_obj = MessageKind(name, kind, match,  # type: ignore[arg-type]
                                       records=self.expr(p + ["records"], m.get("records")),
                                       channel=self.expr(p + ["channel"], m.get("channel")),
                                       fields=tuple(fields))
            elif kind == "error":
                kind_obj = MessageKind(name, kind, match,  # type: ignore[arg-type]
                                       message=self.expr(p + ["message"], m.get("message")),
                                       fatal=bool(m.get("fatal", False)))
            elif kind == "reconnect":
                kind_obj = MessageKind(name, kind, match,  # type: ignore[arg-type]
                                       message=self.expr(p + ["message"], m.get("message")))
            elif kind == "channel":
                has_channel = True
                kind_obj = MessageKind(name, kind, match,  # type: ignore[arg-type]
                                       channel=self.expr(p + ["channel"], m["channel"]),
                                       symbol=self.expr(p + ["symbol"], m["symbol"]))
            else:
                kind_obj = MessageKind(name, kind, match, log=m.get("log", "debug"))  # type: ignore[arg-type]
            out.append(kind_obj)
        if not has_trade and self.shape_ok:
            self.report.add(["messages"], "no message kind of type 'trade': the spec would never store a trade")
        uses_channel = any(k.channel is not None for k in out if k.type == "trade")
        if uses_channel and not has_channel:
            self.report.add(["messages"],
                            "a trade kind reads a channel, but no kind of type 'channel' assigns channels to symbols")
        return tuple(out)

    def check_timeouts(self, heartbeat: dict[str, Any] | None, trade_timeout: float | None,
                       idle_timeout: float, keepalive: Keepalive | None) -> None:
        if heartbeat is not None and heartbeat["timeout"] >= idle_timeout * 10:
            self.report.add(["heartbeat", "timeout"],
                            f"heartbeat timeout {heartbeat['timeout']}s is far above idle_timeout {idle_timeout}s")
        if trade_timeout is not None:
            if heartbeat is None or "last_trade_id" not in heartbeat:
                self.report.add(["trade_timeout"],
                                "trade_timeout needs heartbeat.last_trade_id: without it a quiet market cannot be told "
                                "from a dead feed and would be restarted")
            elif trade_timeout <= heartbeat["timeout"]:
                self.report.add(["trade_timeout"],
                                f"trade_timeout ({trade_timeout}s) must be longer than "
                                f"heartbeat.timeout ({heartbeat['timeout']}s)")
        if keepalive is not None and keepalive.interval >= idle_timeout * 4:
            self.report.add(["keepalive", "interval"],
                            f"keepalive interval {keepalive.interval}s is far above idle_timeout {idle_timeout}s")

    def check_hooks(self, dotted: str) -> None:
        module_name, _, class_name = dotted.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            self.report.add(["hooks"], f"cannot import {module_name!r}: {type(exc).__name__}: {exc}")
            return
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Hooks)):
            self.report.add(["hooks"], f"{dotted!r} is not a subclass of bitty.hooks.Hooks")


# --- public entry points ----------------------------------------------------------------------


def load_spec(path: str | Path, display: str | None = None, params: Mapping[str, str] | None = None,
              optional: frozenset[str] = frozenset()) -> Spec:
    """Load, check and compile one spec file with the chosen ``params`` (``-p name=value``;
    those named in ``optional`` apply only where declared); raise SpecError listing every problem."""
    path = Path(path)
    file = display or _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Problem(file, 1, 1, "$", f"cannot read: {exc}")]) from None
    return parse_spec(text, path, file, params, optional)


def parse_spec(text: str, path: Path, file: str | None = None, params: Mapping[str, str] | None = None,
               optional: frozenset[str] = frozenset()) -> Spec:
    file = file or str(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([Problem(file, line, col, "$", f"invalid YAML: {problem}")]) from None
    report = locate(file, root)
    if not isinstance(data, dict):
        report.add([], f"a spec is a mapping, not {type(data).__name__}")
        raise SpecError(report.problems)
    if "alias" in data:
        return _alias(data, path, report, params or {}, optional)
    try:
        variables = spec_params.choose(data, params or {}, path.stem, optional)
    except spec_params.ParamError as exc:
        report.add(exc.path, str(exc))
        raise SpecError(report.problems) from None
    for where, message in spec_params.check(data):
        report.add(where, message)
    substituted: list[tuple[list[Any], str]] = []
    data = spec_params.substitute(data, variables, [], substituted)
    for where, message in substituted:
        report.add(where, message)
    shape_problems(data, report)
    shape_ok = not report.problems
    try:
        spec = _Builder(data, report, shape_ok).build(path)
    except (KeyError, TypeError, AttributeError, ValueError):
        # The shape is wrong (already reported above); semantic checks went as far as they could.
        if shape_ok:
            raise
        spec = None
    if report.problems or spec is None:
        raise SpecError(sorted(report.problems, key=lambda p: (p.line, p.column)))
    declared = data.get("params") or {}
    markets = data["symbols"].get("markets") or (["perpetual"] if data["symbols"].get("suffix") == "PERP" else ["spot"])
    return dataclasses.replace(spec, params=tuple((n, str(variables[n])) for n in declared), markets=tuple(markets))


def _alias(data: dict[str, Any], path: Path, report: Report, params: Mapping[str, str],
           optional: frozenset[str]) -> Spec:
    """A spec file that is only ``alias: OTHER`` and ``params``: OTHER with those choices."""
    extra = sorted(set(data) - {"alias", "params"})
    if extra:
        report.add([extra[0]], f"an alias file has only `alias` and `params`, not {extra[0]!r}")
    chosen = data.get("params") or {}
    if not isinstance(chosen, dict) or not isinstance(data["alias"], str):
        report.add([], "an alias file is `alias: <exchange>` and `params: {name: value}`")
    if report.problems:
        raise SpecError(report.problems)
    target = path.with_name(f"{data['alias']}{path.suffix}")
    if not target.exists():
        report.add(["alias"], f"no spec {target.name} beside this file")
        raise SpecError(report.problems)
    spec = load_spec(target, params={**{k: str(v) for k, v in chosen.items()}, **params}, optional=optional)
    return dataclasses.replace(spec, path=path)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def spec_files(dirs: list[Path] | None = None) -> dict[str, Path]:
    """Spec files by exchange name; later folders override earlier ones (user over bundled)."""
    found: dict[str, Path] = {}
    for folder in dirs if dirs is not None else paths.spec_dirs():
        if not folder.is_dir():
            continue
        for file in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            found[file.stem] = file
    return found


def find_spec(name_or_path: str, dirs: list[Path] | None = None) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    files = spec_files(dirs)
    if name_or_path in files:
        return files[name_or_path]
    close = difflib.get_close_matches(name_or_path, sorted(files), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise BittyError(f"no spec for exchange {name_or_path!r}{hint}; known: {', '.join(sorted(files)) or 'none'}")


def spec_paths(targets: Sequence[str], dirs: list[Path]) -> list[Path]:
    """Spec files for command-line targets: files, folders of specs, or exchange names looked up
    in ``dirs``; no target means every spec found there."""
    if not targets:
        return list(spec_files(dirs).values())
    out: list[Path] = []
    for target in targets:
        path = Path(target)
        if path.is_dir():
            out += sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml"))
        elif path.suffix in (".yaml", ".yml"):
            out.append(path)
        else:
            out.append(find_spec(target, dirs))
    return out
