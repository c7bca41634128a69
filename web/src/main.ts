// A page that signs in with the identity service directly over gRPC-Web: Register, Login,
// GetMe and ListMySessions through a generated TypeScript client.
//
// The access token lives in this module's memory only (never localStorage or a cookie a
// script can read): a reload signs the user out. A real app refreshes through its own
// same-site backend, which keeps the refresh token in an HttpOnly cookie.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { AuthService } from "./gen/auth/v1/auth_pb.js";

const params = new URLSearchParams(location.search);
const baseUrl = params.get("api") ?? "http://127.0.0.1:50051";
const auth = createClient(
  AuthService,
  createGrpcWebTransport({ baseUrl, useBinaryFormat: true }),
);

let accessToken: string | null = null;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function show(state: "ok" | "error" | "busy", text: string) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function when(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toLocaleString() : "never";
}

function bearer() {
  return { headers: { authorization: `Bearer ${accessToken}` } };
}

async function render() {
  const me = await auth.getMe({}, bearer());
  const { sessions } = await auth.listMySessions({}, bearer());
  const user = me.user!;
  $("me-email").textContent = user.email;
  $("me-id").textContent = user.id;
  $("me-verified").textContent = user.emailVerified ? "yes" : "no";
  $("me-last-login").textContent = when(me.lastLoginAt);
  $("me-roles").textContent = user.roles.length ? user.roles.join(", ") : "none";
  const rows = sessions.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.session = s.id;
    for (const text of [`…${s.id.slice(-8)}`, when(s.createdAt), s.userAgent || s.clientAddress]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    const mark = document.createElement("td");
    if (s.current) {
      mark.textContent = "this browser";
      mark.className = "current";
    }
    tr.append(mark);
    return tr;
  });
  $("sessions").replaceChildren(...rows);
  $("me").hidden = false;
  show("ok", `Signed in as ${user.email}.`);
}

async function signIn(register: boolean) {
  const email = $<HTMLInputElement>("email").value;
  const password = $<HTMLInputElement>("password").value;
  show("busy", register ? "Registering…" : "Signing in…");
  try {
    if (register) {
      await auth.register({ email, password });
    }
    const session = await auth.login({ email, password });
    if (session.mfaRequired) {
      show("error", "This account needs a TOTP code; this page does not ask for one.");
      return;
    }
    accessToken = session.accessToken;
    await render();
  } catch (error) {
    const e = ConnectError.from(error);
    // A CORS refusal never reaches the server: the browser only says the fetch failed.
    const what = e.code === Code.Unknown || e.code === Code.Unavailable
      ? `cannot reach the identity service at ${baseUrl} (${e.rawMessage})`
      : `${Code[e.code]}: ${e.rawMessage}`;
    show("error", what);
  }
}

$("register").addEventListener("click", () => void signIn(true));
$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  void signIn(false);
});
