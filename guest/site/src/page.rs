//! The home page, as a typed maud template: it cannot come out as malformed HTML. Rendered at
//! build time by `build.rs`, which includes this file.

use maud::{DOCTYPE, Markup, PreEscaped, html};

/// A paper the page lists, with the URL of the host name that serves it.
pub struct Paper {
    pub title: String,
    pub url: String,
}

/// Renders the page `name` (checked at build time against `manifest::PAGES`).
pub fn render(name: &str, papers: &[Paper]) -> String {
    match name {
        "home" => home(papers).into_string(),
        other => unreachable!("page {other:?} passed the manifest check but has no template"),
    }
}

/// An inline icon, so that a browser does not open a second connection for `/favicon.ico` (it
/// would get the page again: one resource per host name).
const ICON: &str = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E\
%3Crect width='16' height='16' rx='3' fill='%23264653'/%3E%3Cpath d='M4 8l3 3 5-6' stroke='%23e9c46a' \
stroke-width='2' fill='none'/%3E%3C/svg%3E";

const STYLE: &str = "body{max-width:42rem;margin:2rem auto;padding:0 1rem;font:1.05rem/1.55 \
system-ui,sans-serif;color:#1d2a30}h1{font-size:1.8rem;margin-bottom:.2rem}h2{font-size:1.2rem;\
margin-top:2rem}a{color:#1d6a8a}code{font-size:.95em}.tagline{color:#51616b;margin-top:0}";

fn home(papers: &[Paper]) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "tls-site" }
                link rel="icon" href=(ICON);
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "tls-site" }
                    p class="tagline" { "A website that is nothing but a sandboxed component." }
                }
                main {
                    p {
                        "This page reached you over TLS 1.3 from inside a WebAssembly component. "
                        "The component holds the whole site: this page, the papers below, and the "
                        "rustls state machine that spoke to your browser. The program around it, a "
                        "small wasmtime host, accepts the TCP connection, does its reading and "
                        "writing, and hands the component what happens on it: your bytes, that ours "
                        "have left, that you closed. The component answers with the bytes to send "
                        "and what to wait for next, and can do nothing else: it sees no socket, no "
                        "files and no environment."
                    }
                    p {
                        "Nothing is computed while you wait. The page was rendered from a typed "
                        "template when the component was built, the papers are embedded in it, "
                        "and every response, status line and headers included, sits in memory ready "
                        "to be written. Your connection costs a handshake, a lookup of the name you "
                        "asked for, and one write. Then the component says close_notify and is thrown "
                        "away: the next visitor gets a fresh copy, so nothing of your visit can reach "
                        "theirs."
                    }
                    p {
                        "Each paper has a host name of its own and is picked by the name your client "
                        "sends in the TLS handshake (SNI). A client that sends no name, or one we do "
                        "not know, gets this page."
                    }
                    h2 { "Papers" }
                    ul {
                        @for paper in papers {
                            li { a href=(paper.url) { (paper.title) } }
                        }
                    }
                    h2 { "Built on" }
                    ul {
                        li { a href="https://github.com/rustls/rustls" { "rustls" } ", TLS in Rust" }
                        li { a href="https://wasmtime.dev/" { "Wasmtime" } ", the WebAssembly runtime of the host" }
                        li { a href="https://wasi.dev/" { "WASI 0.2" } " and the component model, the sandbox's interface" }
                        li { a href="https://maud.lambda.xyz/" { "maud" } ", compile-time HTML templates" }
                    }
                    h2 { "Where the idea comes from" }
                    ul {
                        li { a href="https://nqsb.io/" { "nqsb.io" } ", a site served by a MirageOS unikernel with OCaml-TLS" }
                        li { a href="https://mirage.io/" { "MirageOS" } ", library operating systems for the cloud" }
                    }
                }
                footer {
                    p { "Served by " code { "tls-site" } ". No cookies, no scripts, no trackers." }
                }
            }
        }
    }
}
