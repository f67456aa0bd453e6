"""The UI's two interactive pages: /chat (one or two models side by side) and /new (data file ->
`data check` + `advise` -> edited config -> `lmtune train`). static/ui.js drives both through
actions.py's endpoints; these functions render only the page's skeleton."""

from __future__ import annotations

from pathlib import Path

from lmtune.report import html as H
from lmtune.ui.chat import has_weights
from lmtune.ui.pages import page
from lmtune.ui.runs import list_runs


def model_options(runs_dir: Path) -> list[tuple[str, str]]:
    """(value, label) per chat model: each run with weights, and the base it was tuned from."""
    out = []
    for name in list_runs(runs_dir):
        if has_weights(runs_dir / name):
            out += [(f"run:{name}", name), (f"base:{name}", f"{name}'s base model")]
    return out


def _select(pane: str, options: list[tuple[str, str]], pick: int | None) -> str:
    items = [] if pane == "a" else ['<option value="">(none)</option>']
    for i, (value, label) in enumerate(options):
        chosen = " selected" if i == pick else ""
        items.append(f'<option value="{H.esc(value)}"{chosen}>{H.esc(label)}</option>')
    return f'<select id="model-{pane}" aria-label="model {pane}">{"".join(items)}</select>'


def chat_page(runs_dir: Path) -> str:
    options = model_options(runs_dir)
    if not options:
        body = ("<h1>Chat</h1><p class=\"muted\">No run with weights yet: chat needs a run whose training "
                "finished (its adapter/ or model/ directory).</p>")
        return page("lmtune ui: chat", body, runs_dir)
    panes = "".join(
        f'<div class="pane" id="pane-{p}">{_select(p, options, 0 if p == "a" else (1 if len(options) > 1 else None))}'
        f'<div class="transcript" id="transcript-{p}"></div></div>' for p in ("a", "b"))
    body = ("<h1>Chat</h1><p class=\"muted\">Greedy decoding through the run's own template, as "
            "<code>lmtune generate</code>; the same message goes to both models. Models load on first use "
            "(two at most stay loaded).</p>"
            f'<div class="panes">{panes}</div>'
            '<form id="chat-form"><textarea id="chat-input" rows="3" maxlength="16000" '
            'placeholder="your message"></textarea><div><label>max new tokens '
            '<input id="max-tokens" type="number" min="1" max="1024" value="128"></label> '
            '<button type="submit" id="send">send</button> <button type="button" id="clear-chat">new chat</button>'
            "</div></form>")
    return page("lmtune ui: chat", body, runs_dir)


def new_page(runs_dir: Path, settings) -> str:
    if settings.read_only:
        body = ("<h1>New run</h1><p class=\"muted\" id=\"read-only\">This lmtune ui is read-only "
                "(<code>--read-only</code>): it takes no uploads and starts or stops no runs. Start one from a "
                "terminal: <code>lmtune advise --data FILE</code>, then <code>lmtune train advised.yaml</code>.</p>")
        return page("lmtune ui: new run", body, runs_dir)
    mib = settings.max_upload / 2**20
    body = ("<h1>New run</h1>"
            '<section id="new-run">'
            "<h2>1. Data</h2><p><label>run name <input id=\"run-name\" value=\"my-run\" required></label></p>"
            '<p><label>data file <input id="data-path" list="data-files" size="70" '
            'placeholder="a path inside an allowed folder"></label><datalist id="data-files"></datalist></p>'
            f'<p>or upload one (at most {mib:g} MiB): <input type="file" id="upload" '
            'accept=".jsonl,.json,.csv,.tsv,.parquet"> <span id="upload-note" class="muted"></span></p>'
            '<p class="muted" id="folders"></p>'
            '<p><button type="button" id="inspect">check data and advise</button> '
            '<span id="inspect-note" class="muted"></span></p>'
            '<div class="cols"><div><h3>lmtune data check</h3><pre id="check-out"></pre></div>'
            '<div><h3>lmtune advise</h3><pre id="advise-out"></pre></div></div>'
            "<h2>2. Config</h2><p class=\"muted\">advise's proposal; edit it. output.dir is set to "
            f"{H.esc(runs_dir)}/RUN-NAME.</p>"
            '<textarea id="config" rows="22" spellcheck="false"></textarea>'
            '<p><button type="button" id="validate">check config</button> '
            '<button type="button" id="start">start training</button></p>'
            '<pre id="config-note"></pre>'
            "<h2>3. Training</h2><p id=\"run-state\" class=\"muted\">not started</p>"
            '<p><button type="button" id="stop-new" hidden>stop (Ctrl-C)</button></p>'
            '<pre id="train-log"></pre></section>')
    return page("lmtune ui: new run", body, runs_dir)
