// The demo editor served by `weft serve` at "/": /?doc=NAME opens NAME.
import { EditorState } from "@codemirror/state";
import { EditorView, keymap, lineNumbers, highlightActiveLine, drawSelection, highlightActiveLineGutter } from "@codemirror/view";
import { defaultKeymap, history as undoHistory, historyKeymap, indentWithTab } from "@codemirror/commands";
import { WeftClient, type ConnState, type PeerView } from "../src/client.ts";
import { IndexedDBStore, MemoryStore } from "../src/store.ts";
import { weftBinding, safeColor } from "../src/codemirror.ts";

const PALETTE = ["#e4572e", "#17bebb", "#76b041", "#ffb000", "#6a4c93", "#d81159", "#3a86ff", "#8f2d56"];

function randomName(): string {
  const words = ["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "indigo", "juniper", "kelp", "lumen"];
  const w = words[Math.floor(Math.random() * words.length)];
  return `${w}-${Math.random().toString(36).slice(2, 7)}`;
}

function storageGet(k: string): string | null {
  try {
    return localStorage.getItem(k);
  } catch {
    return null;
  }
}
function storageSet(k: string, v: string): void {
  try {
    localStorage.setItem(k, v);
  } catch {
    /* private mode */
  }
}

const url = new URL(location.href);
let docId = url.searchParams.get("doc") ?? "";
if (!docId || new TextEncoder().encode(docId).length > 256 || /[\u0000-\u001f\u007f]/.test(docId)) {
  docId = randomName();
  url.searchParams.set("doc", docId);
  history.replaceState(null, "", url.toString());
}
const token = url.searchParams.get("token") ?? storageGet("weft.token") ?? "";

let name = storageGet("weft.name") ?? "";
if (!name) {
  name = `Guest ${Math.floor(100 + Math.random() * 900)}`;
  storageSet("weft.name", name);
}
let color = storageGet("weft.color") ?? "";
if (!/^#[0-9a-f]{6}$/i.test(color)) {
  color = PALETTE[Math.floor(Math.random() * PALETTE.length)]!;
  storageSet("weft.color", color);
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
$("docname").textContent = docId;
document.title = `${docId} · weft`;
const nameInput = $<HTMLInputElement>("name");
const colorInput = $<HTMLInputElement>("color");
nameInput.value = name;
colorInput.value = color;

const store = IndexedDBStore.available() ? new IndexedDBStore("weft") : new MemoryStore();
const client = new WeftClient({
  url: location.origin,
  token: token || undefined,
  user: { name, color },
  store,
  pingIntervalMs: 5000,
  pingTimeoutMs: 4000,
});

function showState(s: ConnState): void {
  const el = $("status");
  el.dataset.state = s;
  $("status-text").textContent = s;
}

function showPeers(peers: PeerView[]): void {
  const ul = $("people");
  ul.replaceChildren();
  const me = document.createElement("li");
  me.className = "self";
  me.innerHTML = '<span class="swatch"></span><span class="who"></span>';
  (me.firstChild as HTMLElement).style.background = safeColor(client.user.color);
  me.querySelector(".who")!.textContent = `${client.user.name} (you)`;
  ul.appendChild(me);
  for (const p of peers) {
    const li = document.createElement("li");
    li.className = "peer";
    li.innerHTML = '<span class="swatch"></span><span class="who"></span>';
    (li.firstChild as HTMLElement).style.background = safeColor(p.user.color);
    li.querySelector(".who")!.textContent = p.user.name || "anonymous";
    li.title = `session ${p.session.slice(0, 8)}`;
    ul.appendChild(li);
  }
}

client.on("error", (e) => {
  if (!e.permanent && e.code !== "storage") return;
  const el = $("error");
  el.hidden = false;
  el.textContent = `${e.code}: ${e.message}`;
});

const doc = await client.open(docId);
showState(doc.state);
doc.on("state", showState);
showPeers(doc.peers());
doc.on("peers", showPeers);

const view = new EditorView({
  parent: $("editor"),
  state: EditorState.create({
    doc: doc.toString(),
    extensions: [
      lineNumbers(),
      highlightActiveLineGutter(),
      highlightActiveLine(),
      drawSelection(),
      undoHistory(),
      keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
      EditorView.lineWrapping,
      weftBinding(doc),
    ],
  }),
});
view.focus();

function updateUser(): void {
  const n = nameInput.value.trim().slice(0, 40) || "anonymous";
  const c = /^#[0-9a-f]{6}$/i.test(colorInput.value) ? colorInput.value : color;
  storageSet("weft.name", n);
  storageSet("weft.color", c);
  client.setUser({ name: n, color: c });
  showPeers(doc.peers());
}
nameInput.addEventListener("change", updateUser);
nameInput.addEventListener("keydown", (e) => {
  if (e.key === "Enter") {
    updateUser();
    view.focus();
  }
});
colorInput.addEventListener("input", updateUser);

// For tests and the console.
(globalThis as { weft?: unknown }).weft = { client, doc, view };
