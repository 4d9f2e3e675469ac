"""Loading exchange specs: YAML -> schema check (``bitty.spec.schema``) -> semantic checks -> the
frozen, compiled ``Spec`` of ``bitty.spec.model``.

This is the one loader: ``bitty validate`` and ``bitty collect`` both call ``load_spec``. Every
problem is collected (not just the first) and located at ``file:line:col`` through the node marks
of ``yaml.compose``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bitty.errors import BittyError, Problem, SpecError
from bitty.lang.expr import Expr, ExpressionError, compile_expression, side_table_problems, suspicious
from bitty.spec import files as paths
from bitty.spec import params as spec_params
from bitty.spec import source as yaml_source
from bitty.spec.hooks import HooksError, check_hooks
from bitty.spec.model import (
    CONNECTION_VARS,
    REST_TRADES_VARS,
    TRADE_FIELDS,
    Bootstrap,
    Heartbeat,
    Keepalive,
    MessageKind,
    Pong,
    RestLatest,
    RestTrades,
    Spec,
    Subscribe,
    SymbolList,
)
from bitty.spec.schema import Report, fill_defaults, locate, schema, shape_problems
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
            expr = compile_expression(source)
        except ExpressionError as exc:
            self.report.add(path, str(exc))
            return None
        problems = suspicious(expr) + (side_table_problems(expr) if path[-2:] == ["fields", "side"] else [])
        for message in problems:
            self.report.add(path, message)
        return expr

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
        per = subscribe_raw["per"]
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
                bootstrap = Bootstrap(b_url, b["method"], interval)
        symbol_list = self.symbol_list(symbols_raw.get("list"))
        connection = raw["connection"]
        trade_timeout = raw["trade_timeout"]
        idle_timeout = float(raw["idle_timeout"])
        if self.shape_ok:
            self.check_timeouts(raw.get("heartbeat"), trade_timeout, idle_timeout, keepalive)
        hooks = raw.get("hooks")
        if hooks:
            self.check_hooks(hooks, file.parent)
        rest_trades = self.rest_trades(raw["rest"].get("trades") if "rest" in raw else None)
        trade_ids = self.trade_ids(raw, messages)
        rest_latest = self.rest_latest(raw["rest"].get("latest") if "rest" in raw else None)
        if len(self.report.problems) > problems_before or url is None or rules is None:
            return None
        return Spec(
            name=raw["name"],
            version=int(raw["version"]),
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
            compression=raw["compression"],
            bootstrap=bootstrap,
            symbol_list=symbol_list,
            max_symbols=connection.get("max_symbols"),
            max_frame_bytes=int(connection["max_frame_bytes"]),
            messages_per_second=connection.get("messages_per_second"),
            max_age=connection.get("max_age"),
            headers=tuple(sorted(connection["headers"].items())),
            hooks=hooks,
            description=raw["description"],
            docs=raw["docs"],
            trade_ids=trade_ids,
            rest_trades=rest_trades,
            rest_latest=rest_latest,
            params=(),  # the chosen values, set by parse_spec
            markets=tuple(symbols_raw.get("markets") or (["perpetual"] if symbols_raw.get("suffix") == "PERP" else ["spot"])),
        )

    def symbol_rules(self, raw: dict[str, Any]) -> SymbolRules | None:
        native = raw["native"]
        if "{base}" not in native or "{quote}" not in native:
            self.report.add(["symbols", "native"], "must contain both {base} and {quote}")
            return None
        if "{base}{quote}" in native and not raw["quotes"] and not raw["map"]:
            self.report.add(["symbols", "native"],
                            "{base}{quote} has no separator: list the exchange's quote assets in symbols.quotes "
                            "so native symbols can be split")
        return SymbolRules(
            native_format=native,
            case=raw["case"],
            aliases=dict(raw["aliases"]),
            quotes=tuple(raw["quotes"]),
            suffix=raw.get("suffix"),
            explicit=dict(raw["map"]),
            size_units=dict(raw["size_units"]),
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
        paginate = raw["paginate"]
        by = paginate["by"]
        if (by == "cursor") != ("cursor" in paginate):
            self.report.add(p + ["paginate"], "paginate.cursor is needed with by: cursor, and only then")
        rate = raw["rate"]
        if url is None or records is None:
            return None
        return RestTrades(url, records, tuple(fields), error=self.expr(p + ["error"], raw.get("error")),
                          paginate=by, cursor=self.expr(p + ["paginate", "cursor"], paginate.get("cursor")),
                          page_size=paginate.get("page_size"), max_pages=int(paginate["max_pages"]),
                          per_second=float(rate["per_second"]), retries=int(rate["retries"]))

    def rest_latest(self, raw: dict[str, Any] | None) -> RestLatest | None:
        if raw is None:
            return None
        p = ["rest", "latest"]
        url = self.template(p + ["url"], raw["url"], {"symbol"})
        records = self.expr(p + ["records"], raw["records"])
        trade_id = self.expr(p + ["fields", "trade_id"], raw["fields"].get("trade_id"))
        time = self.expr(p + ["fields", "time"], raw["fields"].get("time"))
        if url is None or records is None or (trade_id is None and time is None):
            return None
        return RestLatest(url, records, trade_id, time, error=self.expr(p + ["error"], raw.get("error")),
                          timeout=float(raw["timeout"]), per_second=float(raw["per_second"]))

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
            messages=self.templates(p + ["messages"], raw["messages"], sub_vars | {"symbols"}),
            symbol=self.expr(p + ["symbol"], raw.get("symbol")),
            channel=self.expr(p + ["channel"], raw.get("channel")),
            last_trade_id=self.expr(p + ["last_trade_id"], raw.get("last_trade_id")),
            trades_count=bool(raw["trades_count"]),
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
            else:
                fields = []
            has_channel = has_channel or kind == "channel"
            kind_obj = MessageKind(
                name, kind, match,  # type: ignore[arg-type]
                records=self.expr(p + ["records"], m.get("records")),
                channel=self.expr(p + ["channel"], m.get("channel")),
                fields=tuple(fields),
                symbol=self.expr(p + ["symbol"], m.get("symbol")),
                message=self.expr(p + ["message"], m.get("message")),
                fatal=kind == "error" and bool(m["fatal"]),  # the key exists on error kinds only
                log=m["log"] if kind == "ignore" else "",  # and this one on ignore kinds only
            )
            out.append(kind_obj)
        if not has_trade and self.shape_ok:
            self.report.add(["messages"], "no message kind of type 'trade': the spec would never store a trade")
        uses_channel = any(k.channel is not None for k in out if k.type == "trade")
        if uses_channel and not has_channel:
            self.report.add(["messages"],
                            "a trade kind reads a channel, but no kind of type 'channel' assigns channels to symbols")
        return tuple(out)

    def trade_ids(self, raw: dict[str, Any], messages: tuple[MessageKind, ...]) -> str:
        """What the spec says of the exchange's trade ids. Unset: ``opaque`` where the trade kinds
        map a trade_id, ``none`` (bitty derives ids) where none does."""
        kinds = [k for k in messages if k.type == "trade"]
        without = [k.name for k in kinds if not any(name == "trade_id" for name, _ in k.fields)]
        declared = raw.get("trade_ids")
        if declared is None:
            return "none" if kinds and len(without) == len(kinds) else "opaque"
        if declared == "none" and len(without) < len(kinds):
            mapped = next(k.name for k in kinds if k.name not in without)
            self.report.add(["messages", mapped, "fields", "trade_id"],
                            "trade_ids: none says the exchange publishes no trade ids, but this kind maps one; "
                            "remove fields.trade_id or set trade_ids: opaque")
        elif declared != "none" and without:
            self.report.add(["messages", without[0], "fields"],
                            f"no trade_id, but trade_ids: {declared} says the exchange publishes trade ids; map "
                            "fields.trade_id, or set trade_ids: none if it publishes none (bitty then derives ids)")
        return str(declared)

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

    def check_hooks(self, dotted: str, spec_dir: Path) -> None:
        try:
            check_hooks(dotted, spec_dir)  # reads the module's source; never imports it
        except HooksError as exc:
            self.report.add(["hooks"], str(exc))


# --- public entry points ----------------------------------------------------------------------


def load_spec(path: str | Path, display: str | None = None, params: Mapping[str, str] | None = None,
              optional: frozenset[str] = frozenset()) -> Spec:
    """Load, check and compile one spec file with the chosen ``params`` (``-p name=value``;
    those named in ``optional`` apply only where declared); raise SpecError listing every problem."""
    path = Path(path)
    file = display or _display(path)
    try:
        size = path.stat().st_size
        if size > yaml_source.MAX_BYTES:  # refused before reading: a 50 MB file costs nothing
            raise SpecError([Problem(file, 1, 1, "$", f"the file is {size:,} bytes, over the limit of "
                                     f"{yaml_source.MAX_BYTES:,}; a spec describes one exchange and needs far less")])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Problem(file, 1, 1, "$", f"cannot read: {exc}; save it as UTF-8 text")]) from None
    return parse_spec(text, path, file, params, optional)


def parse_spec(text: str, path: Path, file: str | None = None, params: Mapping[str, str] | None = None,
               optional: frozenset[str] = frozenset()) -> Spec:
    file = file or str(path)
    try:
        root, data, duplicates = yaml_source.read(text, file)
    except yaml_source.SourceError as exc:
        raise SpecError(exc.problems) from None
    report = locate(file, root)
    report.problems += duplicates
    if not isinstance(data, dict):
        report.add([], f"a spec is a mapping, not {type(data).__name__}; start with `name: ...`")
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
    shape_ok = len(report.problems) == len(duplicates)
    fill_defaults(data)
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
    return dataclasses.replace(spec, params=tuple((n, str(variables[n])) for n in declared))


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


def name_clashes(specs: Sequence[Spec]) -> list[Problem]:
    """One problem per spec file whose ``name`` another file also uses: collecting both would
    store two feeds under one exchange name."""
    by_name: dict[str, dict[Path, Spec]] = {}
    for spec in specs:
        by_name.setdefault(spec.name, {})[spec.path.resolve()] = spec
    problems = []
    for name, same in by_name.items():
        if len(same) < 2:
            continue
        files = {path: _display(spec.path) for path, spec in same.items()}
        for path, spec in same.items():
            others = ", ".join(f for p, f in files.items() if p != path)
            line, col = _name_mark(spec.path)
            problems.append(Problem(files[path], line, col, "$.name",
                                    f"name {name!r} is also the name of {others}; exchange names are unique: "
                                    "rename one, or keep one file"))
    return problems


def check_unique_names(specs: Sequence[Spec]) -> None:
    """Refuse specs that share a name (``collect`` runs each exchange once)."""
    problems = name_clashes(specs)
    if problems:
        raise SpecError(problems)


def _name_mark(path: Path) -> tuple[int, int]:
    try:
        root, _, _ = yaml_source.read(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, yaml_source.SourceError):
        return 1, 1
    return locate(str(path), root).locator.where(["name"])


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
