//! Server-Sent Events with reconnection: a stream that drops (server restart, network) is
//! closed and opened again with a growing delay, and `on_open` runs on every (re)connection
//! so the caller can fetch what it missed.

use std::{cell::RefCell, rc::Rc, time::Duration};

use leptos::prelude::*;
use lightpeft_api::rest::Event;
use wasm_bindgen::{JsCast, closure::Closure};
use web_sys::{EventSource, MessageEvent};

/// Connection state, shown in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Not opened yet.
    Connecting,
    /// Receiving events.
    Open,
    /// Lost; the next try is scheduled.
    Reconnecting,
}

type Handler = Rc<dyn Fn(Event)>;
type OnOpen = Rc<dyn Fn()>;

struct Inner {
    path: String,
    source: Option<EventSource>,
    callbacks: Vec<Closure<dyn FnMut(web_sys::Event)>>,
    delay_ms: u64,
    stopped: bool,
}

/// An open subscription; dropping it closes the stream for good.
pub struct Subscription(Rc<RefCell<Inner>>);

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = self.0.borrow_mut();
        inner.stopped = true;
        if let Some(s) = inner.source.take() {
            s.close();
        }
        inner.callbacks.clear();
    }
}

/// Subscribes to `rest` (e.g. `/events`), calling `on_event` for each event and `on_open`
/// after each successful (re)connection. The subscription ends with the current reactive owner.
pub fn subscribe(
    rest: String,
    link: RwSignal<Link>,
    on_event: impl Fn(Event) + 'static,
    on_open: impl Fn() + 'static,
) {
    let inner = Rc::new(RefCell::new(Inner {
        path: rest,
        source: None,
        callbacks: Vec::new(),
        delay_ms: 500,
        stopped: false,
    }));
    connect(&inner, link, Rc::new(on_event), Rc::new(on_open));
    let sub = send_wrapper::SendWrapper::new(Subscription(inner));
    on_cleanup(move || drop(sub));
}

fn connect(inner: &Rc<RefCell<Inner>>, link: RwSignal<Link>, on_event: Handler, on_open: OnOpen) {
    let url = crate::api::browser_url(&inner.borrow().path);
    let Ok(source) = EventSource::new(&url) else {
        retry(inner, link, on_event, on_open);
        return;
    };
    let opened = {
        let inner = Rc::downgrade(inner);
        let on_open = on_open.clone();
        Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            if let Some(inner) = inner.upgrade() {
                inner.borrow_mut().delay_ms = 500;
            }
            link.try_set(Link::Open);
            on_open();
        })
    };
    let message = {
        let on_event = on_event.clone();
        Closure::<dyn FnMut(web_sys::Event)>::new(move |ev: web_sys::Event| {
            let Some(data) = ev
                .dyn_ref::<MessageEvent>()
                .and_then(|m| m.data().as_string())
            else {
                return;
            };
            if let Ok(event) = serde_json::from_str::<Event>(&data) {
                on_event(event);
            }
        })
    };
    let failed = {
        let weak = Rc::downgrade(inner);
        Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            let Some(inner) = weak.upgrade() else { return };
            if let Some(s) = inner.borrow_mut().source.take() {
                s.close();
            }
            retry(&inner, link, on_event.clone(), on_open.clone());
        })
    };
    source.set_onopen(Some(opened.as_ref().unchecked_ref()));
    source.set_onmessage(Some(message.as_ref().unchecked_ref()));
    source.set_onerror(Some(failed.as_ref().unchecked_ref()));
    let mut state = inner.borrow_mut();
    state.source = Some(source);
    // Runs from a timer, never from the old stream's handlers, and the old stream is
    // closed, so its callbacks can go.
    state.callbacks = vec![opened, message, failed];
}

fn retry(inner: &Rc<RefCell<Inner>>, link: RwSignal<Link>, on_event: Handler, on_open: OnOpen) {
    let delay = {
        let mut state = inner.borrow_mut();
        if state.stopped {
            return;
        }
        let delay = state.delay_ms;
        state.delay_ms = (delay * 2).min(8_000);
        delay
    };
    link.try_set(Link::Reconnecting);
    let weak = Rc::downgrade(inner);
    set_timeout(
        move || {
            if let Some(inner) = weak.upgrade()
                && !inner.borrow().stopped
            {
                connect(&inner, link, on_event, on_open);
            }
        },
        Duration::from_millis(delay),
    );
}
