// The server dashboard at "/dashboard": documents, connections, ops/s and
// recent activity, live from GET /v1/dashboard/events (SSE, event "stats").

interface Stats {
  docs: { id: string; len: number; subscribers: number }[];
  connections: number;
  ops_per_sec: number;
  recent: { doc: string; author: string; ops: number; time: string }[];
}

const $ = (id: string) => document.getElementById(id)!;
const token = new URL(location.href).searchParams.get("token");

function setStatus(s: "connecting" | "synced" | "offline", text: string): void {
  $("status").dataset.state = s;
  $("status-text").textContent = text;
}

function cell(text: string, cls?: string): HTMLTableCellElement {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function render(s: Stats): void {
  $("connections").textContent = String(s.connections);
  $("ndocs").textContent = String(s.docs.length);
  $("ops").textContent = s.ops_per_sec.toFixed(1);
  const docs = $("docs").querySelector("tbody")!;
  docs.replaceChildren(
    ...[...s.docs]
      .sort((a, b) => b.subscribers - a.subscribers || a.id.localeCompare(b.id))
      .map((d) => {
        const tr = document.createElement("tr");
        const td = document.createElement("td");
        const a = document.createElement("a");
        a.href = `/?doc=${encodeURIComponent(d.id)}`;
        a.textContent = d.id;
        td.appendChild(a);
        tr.append(td, cell(String(d.len)), cell(String(d.subscribers)));
        return tr;
      }),
  );
  const recent = $("recent").querySelector("tbody")!;
  recent.replaceChildren(
    ...s.recent.map((r) => {
      const tr = document.createElement("tr");
      const t = new Date(r.time);
      tr.append(cell(isNaN(t.getTime()) ? r.time : t.toLocaleTimeString()), cell(r.doc), cell(/^[0-9a-f-]{32,36}$/i.test(r.author) ? r.author.slice(0, 8) : r.author, "mono"), cell(String(r.ops)));
      return tr;
    }),
  );
}

function connect(): void {
  const src = new EventSource("/v1/dashboard/events" + (token ? `?token=${encodeURIComponent(token)}` : ""));
  setStatus("connecting", "connecting");
  src.addEventListener("open", () => setStatus("synced", "live"));
  src.addEventListener("stats", (ev) => {
    try {
      render(JSON.parse((ev as MessageEvent<string>).data) as Stats);
      setStatus("synced", "live");
    } catch (e) {
      console.error("weft dashboard: bad stats event", e);
    }
  });
  // EventSource reconnects by itself; show the gap.
  src.addEventListener("error", () => setStatus(src.readyState === EventSource.CLOSED ? "offline" : "connecting", src.readyState === EventSource.CLOSED ? "offline" : "reconnecting"));
}

connect();
