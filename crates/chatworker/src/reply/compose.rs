//! From a handler's [`Reply`] to the Chat messages that carry it: which
//! space and thread, which deterministic ID, and the text split into parts
//! that fit a message. Pure functions of the event, the reply and its
//! position: no HTTP, no Pub/Sub.

use super::ids::{keyed_id, reply_id, request_id};
use super::text::{MAX_MESSAGE_TEXT_BYTES, split};
use super::{Card, Markup, Notify, Reply, ReplyThread, SendError};
use crate::event::Event;
use crate::names::{ClientMessageId, MessageName, SpaceName, ThreadName, UserName};

/// A message to create.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct NewMessage {
    /// The space to post in.
    pub space: SpaceName,
    /// Our deterministic ID; `None` lets Chat choose one (only `chatworker
    /// send` does that).
    pub id: Option<ClientMessageId>,
    /// With an ID the app chose: a request ID derived from the event, so
    /// that Chat answers a redelivery with the message it created, and a
    /// 409 means the ID is taken by another message.
    pub request_id: Option<String>,
    /// Text.
    pub text: Option<String>,
    /// Cards with their IDs.
    pub cards: Vec<(String, Card)>,
    /// Where it goes.
    pub thread: Threading,
    /// Buttons under the message (accessory widgets).
    pub accessory_buttons: Vec<google_apps_card_v1::model::Button>,
    /// The one person who may see it, for a private message.
    pub private_to: Option<UserName>,
    /// How people are notified.
    pub notify: Notify,
    /// How Chat reads the text; always sent, because new and old Chat apps
    /// default differently.
    pub markup: Markup,
}

impl NewMessage {
    /// `spaces/S/messages/client-…`, for a message with our ID.
    pub fn name(&self) -> Option<MessageName> {
        Some(MessageName::in_space(&self.space, self.id.as_ref()?))
    }
}

/// The parts of a message an update writes over.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Content {
    /// Text.
    pub text: Option<String>,
    /// Cards with their IDs.
    pub cards: Vec<(String, Card)>,
    /// Buttons under the message.
    pub accessory_buttons: Vec<google_apps_card_v1::model::Button>,
    /// How Chat reads the text.
    pub markup: Markup,
}

impl Content {
    /// What `reply` writes over a message, with `markup` unless the reply
    /// says otherwise.
    pub fn of(reply: Reply, markup: Markup) -> Self {
        Self {
            text: reply.text,
            cards: reply.cards,
            accessory_buttons: reply.accessory_buttons,
            markup: reply.markup.unwrap_or(markup),
        }
    }
}

/// Where a new message goes in its space.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Threading {
    /// Reply in this thread, or start a new one if it is gone.
    Reply(ThreadName),
    /// The app-owned thread with this key, created on first use.
    Key(String),
    /// Start a new thread.
    New,
}

/// What became of a create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// Chat created it.
    New,
    /// Chat already holds a message with our ID (409 ALREADY_EXISTS): an
    /// earlier delivery of this event created it.
    AlreadyExisted,
}

/// The ID the worker gives the message at `position` (0-based) among the
/// messages `event` causes, whether sent through the
/// [`crate::Context`] or returned: a later event can update or delete that
/// message by the name `spaces/S/messages/<id>`. `None` for an event that
/// carries neither a time nor a message name (its replies' IDs derive from
/// the Pub/Sub message ID instead).
pub fn message_id(event: &Event, position: usize) -> Option<ClientMessageId> {
    event
        .identity()
        .map(|identity| reply_id(&identity, position))
}

/// What the cards and buttons of a message weigh against Chat's size limit,
/// which counts a message's text and cards together: their JSON, plus room
/// for the fields around each (so that the estimate errs on the safe side).
fn attachments_bytes(reply: &Reply) -> usize {
    const AROUND_EACH: usize = 64;
    let size = |json: serde_json::Result<Vec<u8>>| json.map_or(MAX_MESSAGE_TEXT_BYTES, |v| v.len());
    let cards: usize = reply
        .cards
        .iter()
        .map(|(id, card)| size(serde_json::to_vec(card)) + id.len() + AROUND_EACH)
        .sum();
    let buttons = match reply.accessory_buttons.is_empty() {
        true => 0,
        false => size(serde_json::to_vec(&reply.accessory_buttons)) + AROUND_EACH,
    };
    cards + buttons
}

/// The text's parts: each fits a message, and the last one also leaves
/// room for the cards and buttons it carries, `attachments` bytes. When
/// they fill a message on their own, they go alone in a last part of no
/// text (`None`).
fn text_parts(text: &str, attachments: usize) -> Vec<Option<&str>> {
    let mut parts: Vec<Option<&str>> = split(text, MAX_MESSAGE_TEXT_BYTES)
        .into_iter()
        .map(Some)
        .collect();
    let room = MAX_MESSAGE_TEXT_BYTES.saturating_sub(attachments);
    match parts.last().copied().flatten() {
        Some(last) if attachments > 0 && last.len() > room => {
            parts.pop();
            // Below a few bytes a part would be a stub: the attachments
            // then get a message of their own.
            if room >= 64 {
                parts.extend(split(last, room).into_iter().map(Some));
            } else {
                parts.push(Some(last));
                parts.push(None);
            }
        }
        _ => {}
    }
    parts
}

/// The messages of one reply: one, or several in the same thread when its
/// text with its cards is more than a message may carry (Chat's limit,
/// 32,000 bytes, counts text and cards together; cards and buttons go with
/// the last part). Part 0 keeps the reply's ID; part k's ID derives from it
/// and k.
pub(crate) fn compose(
    event: &Event,
    reply: Reply,
    identity: &str,
    index: usize,
    markup: Markup,
) -> Vec<NewMessage> {
    let text = reply.text.clone().unwrap_or_default();
    let parts = text_parts(&text, attachments_bytes(&reply));
    // A reply's own ID, or one derived from the event and its key or
    // position; part k's derives from part 0's.
    let base = match (&reply.id, &reply.key) {
        (Some(id), _) => id.clone(),
        (None, Some(key)) => keyed_id(identity, key),
        (None, None) => reply_id(identity, index),
    };
    let chosen = reply.id.is_some();
    let positional = reply.id.is_none() && reply.key.is_none();
    let id = |k: usize| match k {
        0 => base.clone(),
        // Unchanged since the first release: a new scheme would answer
        // in-flight events twice after a deploy.
        k if positional => reply_id(&format!("{identity}#part{k}"), index),
        k => reply_id(&format!("{base}#part{k}"), 0),
    };
    // The request IDs only an app-chosen ID needs (see `NewMessage`).
    let request = |k: usize| chosen.then(|| request_id(identity, index + k * 1_000_000));
    if parts.len() <= 1 {
        let id = id(0);
        let mut message = new_message(event, reply, id, markup);
        message.request_id = request(0);
        return vec![message];
    }
    let ids: Vec<_> = (0..parts.len()).map(id).collect();
    let first = new_message(event, reply, ids[0].clone(), markup);
    // A reply that starts a thread: the parts share a key, so that the
    // first part starts the thread and the others follow it there.
    let thread = match &first.thread {
        Threading::New => Threading::Key(ids[0].as_str().to_owned()),
        other => other.clone(),
    };
    let last = parts.len() - 1;
    parts
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(k, (part, id))| NewMessage {
            id: Some(id),
            request_id: request(k),
            text: part.map(str::to_owned),
            cards: if k == last {
                first.cards.clone()
            } else {
                Vec::new()
            },
            accessory_buttons: if k == last {
                first.accessory_buttons.clone()
            } else {
                Vec::new()
            },
            thread: thread.clone(),
            ..first.clone()
        })
        .collect()
}

/// One message for `reply` in answer to `event`, with `id`.
pub(crate) fn new_message(
    event: &Event,
    reply: Reply,
    id: ClientMessageId,
    markup: Markup,
) -> NewMessage {
    let space = reply.space.unwrap_or_else(|| event.space.name.clone());
    let thread = match reply.thread {
        // The event's thread lives in the event's space only.
        ReplyThread::Event if space == event.space.name => event
            .thread
            .clone()
            .map_or(Threading::New, Threading::Reply),
        ReplyThread::Key(key) => Threading::Key(key),
        ReplyThread::Event | ReplyThread::New => Threading::New,
    };
    NewMessage {
        space,
        id: Some(id),
        request_id: None,
        text: reply.text,
        cards: reply.cards,
        thread,
        accessory_buttons: reply.accessory_buttons,
        private_to: reply.private_to,
        notify: reply.notify,
        markup: reply.markup.unwrap_or(markup),
    }
}

/// A card Chat would refuse is reported before sending, naming its largest
/// widget, rather than as a bare 400 from Chat.
pub(crate) fn check_cards(cards: &[(String, Card)]) -> Result<(), SendError> {
    match cards.iter().find_map(|(_, c)| super::card::check(c).err()) {
        Some(e) => Err(SendError::permanent(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode;

    fn event() -> Event {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/events/classic/message.json"
        );
        decode(&std::fs::read(path).expect("fixture")).expect("decodes")
    }

    fn threading(reply: Reply) -> (SpaceName, Threading) {
        let message = new_message(&event(), reply, reply_id("x", 0), Markup::Chat);
        (message.space, message.thread)
    }

    #[test]
    fn long_text_is_split_in_one_thread_with_distinct_stable_ids() {
        let long = format!("{}\n{}", "a".repeat(31_000), "b".repeat(5_000));
        let parts = compose(&event(), Reply::text(&long), "id", 0, Markup::Chat);
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0].id,
            Some(reply_id("id", 0)),
            "part 0 keeps the reply's ID"
        );
        assert_ne!(parts[0].id, parts[1].id);
        let again = compose(&event(), Reply::text(&long), "id", 0, Markup::Chat);
        assert_eq!(parts[1].id, again[1].id);
        assert!(matches!(&parts[1].thread, Threading::Reply(_)));
        let texts: String = parts.iter().filter_map(|p| p.text.clone()).collect();
        assert_eq!(texts, long);
        assert!(parts.iter().all(|p| p.cards.is_empty()));
        // A new thread: the parts share a key, so they stay together.
        let parts = compose(
            &event(),
            Reply::text(&long).in_new_thread(),
            "id",
            0,
            Markup::Chat,
        );
        assert!(
            matches!(&parts[0].thread, Threading::Key(k) if Some(k.as_str()) == parts[0].id.as_ref().map(|i| i.as_str()))
        );
        assert_eq!(parts[0].thread, parts[1].thread);
    }

    #[test]
    fn text_and_cards_together_fit_the_limit() {
        let card = crate::card::CardBuilder::new()
            .header("Report", "x".repeat(900))
            .build()
            .expect("a card");
        let weight = attachments_bytes(&Reply::card("c", card.clone()));
        assert!(weight > 900);
        // Text that fits alone, but not with its card: the card's part is
        // cut so that text and card together fit.
        let text = "y".repeat(MAX_MESSAGE_TEXT_BYTES - 100);
        let reply = Reply::text(&text).with_card("c", card.clone());
        let parts = compose(&event(), reply, "id", 0, Markup::Chat);
        assert_eq!(parts.len(), 2);
        let last = &parts[1];
        assert_eq!(last.cards.len(), 1, "the card goes with the last part");
        let last_text = last.text.as_deref().unwrap_or_default().len();
        assert!(last_text + weight <= MAX_MESSAGE_TEXT_BYTES);
        let joined: String = parts.iter().filter_map(|p| p.text.clone()).collect();
        assert_eq!(joined, text);
        // Short text and the card: one message.
        let one = compose(
            &event(),
            Reply::text("hi").with_card("c", card),
            "id",
            0,
            Markup::Chat,
        );
        assert_eq!(one.len(), 1);
        // Attachments that leave no room: they go alone, after the text.
        assert_eq!(
            text_parts("abc", MAX_MESSAGE_TEXT_BYTES),
            [Some("abc"), None]
        );
        assert_eq!(text_parts("abc", 10), [Some("abc")]);
        assert!(
            text_parts("", 10).is_empty(),
            "no text: no part; the message carries the cards"
        );
    }

    #[test]
    fn replies_go_where_the_handler_asked() {
        let own = SpaceName::parse("spaces/AAAAtest").expect("space");
        let thread = ThreadName::parse("spaces/AAAAtest/threads/TTTT1").expect("thread");
        assert_eq!(
            threading(Reply::text("a")),
            (own.clone(), Threading::Reply(thread))
        );
        assert_eq!(
            threading(Reply::text("a").in_new_thread()),
            (own.clone(), Threading::New)
        );
        assert_eq!(
            threading(Reply::text("a").in_thread_key("k")),
            (own, Threading::Key("k".into()))
        );
        // The event's thread does not exist in another space.
        let other = SpaceName::parse("spaces/OTHER").expect("space");
        assert_eq!(
            threading(Reply::text("a").in_space(other.clone())),
            (other, Threading::New)
        );
    }

    #[test]
    fn a_key_names_a_message_whatever_its_position() {
        let keyed = |index| {
            compose(
                &event(),
                Reply::text("a").with_key("summary"),
                "id",
                index,
                Markup::Chat,
            )
        };
        assert_eq!(
            keyed(0)[0].id,
            keyed(5)[0].id,
            "the position does not matter"
        );
        assert_eq!(keyed(0)[0].id, Some(keyed_id("id", "summary")));
        assert_ne!(keyed(0)[0].id, Some(reply_id("id", 0)));
        assert_eq!(
            keyed(0)[0].request_id,
            None,
            "derived from the event: no request ID"
        );
        // An ID the app chose gets a request ID from the event.
        let id = ClientMessageId::new("client-ticket-1").expect("id");
        let chosen = compose(
            &event(),
            Reply::text("a").with_id(id.clone()),
            "id",
            3,
            Markup::Chat,
        );
        assert_eq!(chosen[0].id, Some(id));
        assert_eq!(chosen[0].request_id, Some(request_id("id", 3)));
    }

    #[test]
    fn the_public_message_id_is_the_one_replies_get() {
        let event = event();
        let identity = event.identity().expect("an identity");
        assert_eq!(message_id(&event, 1), Some(reply_id(&identity, 1)));
    }
}
