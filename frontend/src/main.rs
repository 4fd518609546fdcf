//! lightpeft's dashboard: a Leptos client-side app that talks to the server only through the
//! REST API (`lightpeft-api` types) and its event streams.

mod api;
mod events;
mod format;
mod pages;
mod store;
mod widgets;

use leptos::prelude::*;
use leptos_router::{
    components::{A, Route, Router, Routes},
    path,
};

use crate::{events::Link, store::Store};

fn main() {
    mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    let store = Store::start();
    provide_context(store);
    view! {
        <Router>
            <header class="top">
                <A href="/" exact=true attr:class="brand">
                    "lightpeft"
                </A>
                <nav>
                    <A href="/" exact=true>
                        "Runs"
                    </A>
                    <A href="/new">"New experiment"</A>
                </nav>
                <span class="spacer"></span>
                <LinkState link=store.link />
                <TokenField needed=store.auth_needed />
            </header>
            <main>
                <Routes fallback=|| view! { <p class="error">"No such page."</p> }>
                    <Route path=path!("/") view=pages::runs::RunsPage />
                    <Route path=path!("/new") view=pages::new::NewExperiment />
                    <Route path=path!("/experiments/:id") view=pages::run::RunPage />
                    <Route path=path!("/studies/:id") view=pages::study::StudyPage />
                    <Route path=path!("/compare") view=pages::compare::ComparePage />
                </Routes>
            </main>
        </Router>
    }
}

/// The events connection, shown so that a stale view is never mistaken for a live one.
#[component]
fn LinkState(link: RwSignal<Link>) -> impl IntoView {
    let text = move || match link.get() {
        Link::Connecting => "connecting…",
        Link::Open => "live",
        Link::Reconnecting => "connection lost, reconnecting…",
    };
    view! {
        <span class=move || format!("link link-{:?}", link.get()).to_lowercase() id="link-state" role="status">
            {text}
        </span>
    }
}

/// Shown when the API answered 401: the bearer token, kept in local storage.
#[component]
fn TokenField(needed: RwSignal<bool>) -> impl IntoView {
    let draft = RwSignal::new(api::token().unwrap_or_default());
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        api::set_token(draft.get_untracked().trim());
        window().location().reload().ok();
    };
    view! {
        <Show when=move || needed.get()>
            <form class="token" on:submit=save>
                <label for="token">"API token"</label>
                <input id="token" type="password" autocomplete="off" bind:value=draft />
                <button type="submit">"Use token"</button>
                <span class="error">"The server asks for a bearer token."</span>
            </form>
        </Show>
    }
}
