// CodeMirror 6 binding for a WeftDoc.
//
// - Local transactions become CRDT ops. CodeMirror counts UTF-16 units and
//   the CRDT code points; the replica keeps both widths, so each change is
//   converted against the replica's state at that moment.
// - Remote ops arrive as sequential position-based changes (the CRDT reports
//   them the way the Go package's ApplyChanges does) and are dispatched as
//   one transaction annotated as remote, so they are not echoed back, kept
//   out of the undo history, and mapped through the local selection the way
//   CodeMirror maps any change.
// - Peers' carets and selections are decorations in the peer's colour, the
//   caret labelled with the peer's name; their positions are resolved from
//   CRDT anchors after every change.

import { Annotation, ChangeSet, EditorSelection, Transaction, type Extension, type Text as CMText } from "@codemirror/state";
import { Decoration, EditorView, ViewPlugin, WidgetType, type DecorationSet, type PluginValue, type ViewUpdate } from "@codemirror/view";
import type { WeftDoc, PeerView } from "./client.ts";
import { wellFormed, type Change } from "./crdt.ts";

/** Whether UTF-16 offset p of doc falls between the halves of a surrogate pair. */
function midPair(doc: CMText, p: number): boolean {
  if (p <= 0 || p >= doc.length) return false;
  const two = doc.sliceString(p - 1, p + 1);
  const hi = two.charCodeAt(0),
    lo = two.charCodeAt(1);
  return hi >= 0xd800 && hi <= 0xdbff && lo >= 0xdc00 && lo <= 0xdfff;
}

/** Marks transactions that carry remote edits into the editor. */
export const remoteEdit = Annotation.define<boolean>();

/** A CSS colour we are willing to put in a style attribute. */
export function safeColor(c: string, fallback = "#888888"): string {
  return /^#[0-9a-fA-F]{3,8}$/.test(c) || /^(rgb|hsl)a?\([\d\s.,%]+\)$/.test(c) ? c : fallback;
}

function withAlpha(c: string, alpha: number): string {
  if (/^#[0-9a-fA-F]{6}$/.test(c)) return c + Math.round(alpha * 255).toString(16).padStart(2, "0");
  if (/^#[0-9a-fA-F]{3}$/.test(c)) return "#" + [...c.slice(1)].map((x) => x + x).join("") + Math.round(alpha * 255).toString(16).padStart(2, "0");
  return c;
}

class CaretWidget extends WidgetType {
  constructor(
    readonly name: string,
    readonly color: string,
  ) {
    super();
  }
  override eq(o: CaretWidget): boolean {
    return o.name === this.name && o.color === this.color;
  }
  toDOM(): HTMLElement {
    const wrap = document.createElement("span");
    wrap.className = "cm-weft-caret";
    wrap.style.borderLeftColor = this.color;
    wrap.setAttribute("aria-hidden", "true");
    const label = document.createElement("span");
    label.className = "cm-weft-caret-label";
    label.style.backgroundColor = this.color;
    label.textContent = this.name;
    wrap.appendChild(label);
    return wrap;
  }
  override ignoreEvent(): boolean {
    return true;
  }
}

const theme = EditorView.baseTheme({
  ".cm-weft-caret": {
    position: "relative",
    borderLeft: "2px solid",
    marginLeft: "-1px",
    marginRight: "-1px",
    pointerEvents: "none",
  },
  ".cm-weft-caret-label": {
    position: "absolute",
    top: "-1.35em",
    left: "-2px",
    fontSize: "0.7em",
    lineHeight: "1.3",
    padding: "0 3px",
    borderRadius: "3px 3px 3px 0",
    color: "white",
    whiteSpace: "nowrap",
    fontFamily: "system-ui, sans-serif",
    userSelect: "none",
    zIndex: "10",
  },
});

export interface BindingOptions {
  /** Called when the editor and the replica disagreed and were realigned (a bug). */
  onResync?: () => void;
}

/**
 * The extension that binds an editor to a WeftDoc. Create the editor with
 * `doc: weftDoc.toString()`; the binding realigns it if needed.
 */
export function weftBinding(doc: WeftDoc, opts: BindingOptions = {}): Extension {
  const plugin = ViewPlugin.fromClass(
    class implements PluginValue {
      decorations: DecorationSet = Decoration.none;
      private offs: (() => void)[] = [];

      constructor(readonly view: EditorView) {
        this.offs.push(doc.on("remote", (changes) => this.remote(changes)));
        this.offs.push(doc.on("peers", () => this.refreshPeers()));
        if (view.state.doc.toString() !== doc.toString()) this.scheduleRealign();
        this.decorations = this.build();
        queueMicrotask(() => this.publishSelection());
      }

      update(u: ViewUpdate): void {
        let local = false;
        for (const tr of u.transactions) {
          if (!tr.docChanged || tr.annotation(remoteEdit)) continue;
          local = true;
          this.applyLocal(tr.changes, tr.startState.doc);
        }
        // A change the replica cannot mirror exactly (half of a surrogate
        // pair, from a programmatic edit) leaves the two apart: realign,
        // after this update (no dispatch may happen inside one).
        if (local && u.state.doc.length !== doc.text.length16) this.scheduleRealign();
        if (u.docChanged || u.transactions.some((t) => t.annotation(remoteEdit) !== undefined) || u.transactions.some((t) => t.effects.length > 0)) {
          this.decorations = this.build();
        }
        if (local || u.selectionSet || (u.focusChanged && u.view.hasFocus)) this.publishSelection();
      }

      destroy(): void {
        for (const f of this.offs) f();
      }

      /** Local changes, in the order CodeMirror lists them, become CRDT edits. */
      private applyLocal(changes: ChangeSet, before: CMText): void {
        const t = doc.text;
        changes.iterChanges((fromA, toA, fromB, _toB, inserted) => {
          // fromB is where this change starts once the earlier ones applied:
          // the replica's current state.
          const from = t.fromUtf16(fromB);
          const end16 = fromB + (toA - fromA);
          const end = toA > fromA ? t.fromUtf16(end16) : from;
          const del = end - from;
          const ins = inserted.length > 0 ? inserted.toString() : "";
          // Inside a surrogate pair, or inserting a lone surrogate: the
          // replica can only approximate this edit, so realign afterwards.
          if (midPair(before, fromA) || midPair(before, toA) || wellFormed(ins) !== ins) this.scheduleRealign();
          if (del > 0 && ins) doc.replace(from, del, ins);
          else if (del > 0) doc.delete(from, del);
          else if (ins) doc.insert(from, ins);
        });
      }

      /** Remote changes (sequential, UTF-16 offsets given) become one transaction. */
      private remote(changes: Change[]): void {
        const view = this.view;
        let len = view.state.doc.length;
        let cs = ChangeSet.empty(len);
        try {
          for (const c of changes) {
            const step = ChangeSet.of({ from: c.pos16, to: c.pos16 + c.delete16, insert: c.insert }, len);
            cs = cs.compose(step);
            len = step.newLength;
          }
        } catch {
          this.scheduleRealign();
          return;
        }
        view.dispatch({ changes: cs, annotations: [remoteEdit.of(true), Transaction.addToHistory.of(false)] });
        if (view.state.doc.length !== doc.text.length16) this.scheduleRealign();
      }

      private realignPending = false;

      private scheduleRealign(): void {
        if (this.realignPending) return;
        this.realignPending = true;
        queueMicrotask(() => {
          this.realignPending = false;
          this.realign();
        });
      }

      /** Replaces the editor's text with the replica's, keeping the caret near. */
      private realign(): void {
        const view = this.view;
        const want = doc.toString();
        if (view.state.doc.toString() === want) return;
        const head = Math.min(view.state.selection.main.head, want.length);
        view.dispatch({
          changes: { from: 0, to: view.state.doc.length, insert: want },
          selection: EditorSelection.cursor(head),
          annotations: [remoteEdit.of(true), Transaction.addToHistory.of(false)],
        });
        opts.onResync?.();
      }

      private refreshPeers(): void {
        // A dispatch (with no change) lets update() rebuild the decorations.
        this.view.dispatch({ annotations: [remoteEdit.of(false)] });
      }

      private publishSelection(): void {
        const t = doc.text;
        const sel = this.view.state.selection;
        const ranges = [sel.main, ...sel.ranges.filter((r) => r !== sel.main)];
        doc.setSelection(ranges.map((r) => ({ anchor: t.fromUtf16(r.anchor), head: t.fromUtf16(r.head) })));
      }

      private build(): DecorationSet {
        const t = doc.text;
        const max = this.view.state.doc.length;
        const out = [];
        for (const p of doc.peers() as PeerView[]) {
          const color = safeColor(p.user.color);
          for (const s of p.selections) {
            const a = Math.min(t.toUtf16(s.anchor), max),
              h = Math.min(t.toUtf16(s.head), max);
            if (a === h) continue;
            out.push(
              Decoration.mark({ class: "cm-weft-selection", attributes: { style: `background-color: ${withAlpha(color, 0.25)}` } }).range(Math.min(a, h), Math.max(a, h)),
            );
          }
          if (p.cursor !== null) {
            const pos = Math.min(t.toUtf16(p.cursor), max);
            out.push(Decoration.widget({ widget: new CaretWidget(p.user.name || "anonymous", color), side: 1 }).range(pos));
          }
        }
        return Decoration.set(out, true);
      }
    },
    { decorations: (v) => v.decorations },
  );
  return [plugin, theme];
}
