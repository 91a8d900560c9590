//! The bots in `examples/`, each built by `cargo test` and run as its own
//! process against the Pub/Sub emulator and the Chat simulator. People act
//! through the simulator's playground, which publishes the events Chat
//! would; the tests check what each bot did in the simulator.

use chatworker_testkit::{Sim, Topic, Worker, await_answers_of, eventually};
use serde_json::{Value, json};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

/// The card JSON and text of an app message, as one searchable string.
fn shown(record: &Value) -> String {
    let m = &record["message"];
    format!(
        "{} {}",
        m["text"].as_str().unwrap_or_default(),
        m["cardsV2"]
    )
}

/// The app message whose text or cards contain `needle`.
fn find<'a>(records: &'a [Value], needle: &str) -> &'a Value {
    records
        .iter()
        .find(|r| shown(r).contains(needle))
        .unwrap_or_else(|| panic!("no app message shows {needle:?}: {records:#?}"))
}

async fn message_with_id(sim: &Sim, client_id: &str) -> Value {
    let all = sim.app_messages().await;
    let found = all.iter().find(|r| {
        let id = r["message"]["clientAssignedMessageId"].as_str();
        id == Some(client_id)
    });
    match found {
        Some(r) => r.clone(),
        None => panic!("no app message with the ID {client_id} in {all:#?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_answers_with_a_card_in_the_thread_and_greets_new_spaces() {
    let topic = Topic::fresh("example-echo").await;
    let sim = Sim::with_playground(&topic.topic, &[("/help", 1)]).await;
    let mut bot = Worker::start_example("echo", &sim, &topic.subscription, &[]).await;

    let acted = sim
        .act(
            "spaces/ECHO",
            json!({"kind": "message", "text": "hello there"}),
        )
        .await;
    let records = await_answers_of(&sim, &bot, 1, DEADLINE).await;
    let card = shown(&records[0]);
    assert!(
        card.contains("Hello, Ada Lovelace") && card.contains("hello there"),
        "{card}"
    );
    assert_eq!(
        records[0]["message"]["thread"]["name"], acted["event"]["message"]["thread"]["name"],
        "answered in the message's thread"
    );
    let accessory = &records[0]["body"]["accessoryWidgets"][0]["buttonList"]["buttons"][0];
    assert_eq!(accessory["text"], "How this works");
    // Every message says how its text is to be read.
    assert_eq!(records[0]["body"]["markupSyntax"], "MARKUP_SYNTAX_CHAT");

    // /help is a slash command the bot registered by name: the playground
    // annotates it as Chat would. The two events are in different threads,
    // so their answers may come in either order.
    sim.act("spaces/ECHO", json!({"kind": "message", "text": "/help"}))
        .await;
    sim.act("spaces/ECHO", json!({"kind": "added"})).await;
    let records = await_answers_of(&sim, &bot, 3, DEADLINE).await;
    find(&records, "I answer every message with a card");
    find(&records, "Thanks for adding me");

    let (status, _) = bot.terminate(DEADLINE).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(bot.counter("events_acked"), 3);
    assert!(
        bot.logs().contains("event handled"),
        "the Logging layer logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_open_update_in_place_and_close_by_client_id() {
    let topic = Topic::fresh("example-tickets").await;
    let commands = [("/ticket", 1), ("/close", 2), ("/tickets", 3)];
    let sim = Sim::with_playground(&topic.topic, &commands).await;
    // The store outlives the bot: it is restarted below.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("tickets.db").display());
    let env = [("CHATWORKER_STORE__URL", url.as_str())];
    let mut bot = Worker::start_example("tickets", &sim, &topic.subscription, &env).await;
    let space = "spaces/TICKETS";

    sim.act(
        space,
        json!({"kind": "message", "text": "/ticket Printer on fire"}),
    )
    .await;
    await_answers_of(&sim, &bot, 1, DEADLINE).await;
    let card = message_with_id(&sim, "client-ticket-1").await;
    let name = card["message"]["name"].as_str().expect("name").to_owned();
    assert!(shown(&card).contains("Printer on fire") && shown(&card).contains("Open"));

    // "Take it": the same card, updated in place.
    sim.act(
        space,
        json!({"kind": "click", "message": name, "function": "ticket",
               "parameters": {"ticket": "1", "close": "false"}}),
    )
    .await;
    let taken = eventually(DEADLINE, || async {
        let card = message_with_id(&sim, "client-ticket-1").await;
        shown(&card)
            .contains("Taken by Ada Lovelace")
            .then_some(card)
    })
    .await
    .expect("the card shows who took the ticket");
    assert_eq!(taken["updates"], 1);

    // /tickets is registered by its command ID.
    sim.act(space, json!({"kind": "message", "text": "/tickets"}))
        .await;
    let records = await_answers_of(&sim, &bot, 2, DEADLINE).await;
    assert!(
        shown(&records[1]).contains("#1 Printer on fire"),
        "{}",
        shown(&records[1])
    );

    // /close updates the card through its client ID, from another event.
    sim.act(space, json!({"kind": "message", "text": "/close 1"}))
        .await;
    let records = await_answers_of(&sim, &bot, 3, DEADLINE).await;
    assert!(shown(&records[2]).contains("Closed ticket #1."));
    let closed = message_with_id(&sim, "client-ticket-1").await;
    assert!(shown(&closed).contains("Closed") && !shown(&closed).contains("Take it"));

    // A click whose parameters do not read: the error hook tells the
    // person privately; the event is acked, not retried.
    sim.act(
        space,
        json!({"kind": "click", "message": name, "function": "ticket",
               "parameters": {"ticket": "one"}}),
    )
    .await;
    let records = await_answers_of(&sim, &bot, 4, DEADLINE).await;
    assert!(
        shown(&records[3]).contains("That did not work"),
        "{}",
        shown(&records[3])
    );
    assert_eq!(
        records[3]["body"]["privateMessageViewer"]["name"],
        "users/1234567890"
    );

    let (status, _) = bot.terminate(DEADLINE).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(bot.counter("events_acked"), 5);
    assert_eq!(bot.counter("events_nacked"), 0);
    assert!(bot.summary()["events_dropped"].contains("handler_permanent"));

    // Restarted on the same store: the numbers go on, the closed ticket
    // stays closed. (A new subscription and simulator: the emulator may
    // hold back a stream that follows a closed one on the same
    // subscription; the store is what carries over.)
    let topic = Topic::fresh("example-tickets-again").await;
    let sim = Sim::with_playground(&topic.topic, &commands).await;
    let mut bot = Worker::start_example("tickets", &sim, &topic.subscription, &env).await;
    sim.act(
        space,
        json!({"kind": "message", "text": "/ticket Toner low"}),
    )
    .await;
    await_answers_of(&sim, &bot, 1, DEADLINE).await;
    let second = message_with_id(&sim, "client-ticket-2").await;
    assert!(
        shown(&second).contains("Ticket #2") && shown(&second).contains("Toner low"),
        "{}",
        shown(&second)
    );
    sim.act(space, json!({"kind": "message", "text": "/tickets"}))
        .await;
    let records = await_answers_of(&sim, &bot, 2, DEADLINE).await;
    let listed = shown(&records[1]);
    assert!(
        listed.contains("#2 Toner low") && !listed.contains("#1 "),
        "{listed}"
    );
    let (status, _) = bot.terminate(DEADLINE).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_edits_its_placeholder_until_the_result_is_in() {
    let topic = Topic::fresh("example-long-job").await;
    let sim = Sim::with_playground(&topic.topic, &[("/report", 7)]).await;
    let env = [("JOB_STEP_MS", "300")];
    let mut bot = Worker::start_example("long_job", &sim, &topic.subscription, &env).await;

    sim.act(
        "spaces/JOBS",
        json!({"kind": "message", "text": "/report sales"}),
    )
    .await;
    // The placeholder is there before the job is done.
    let records = await_answers_of(&sim, &bot, 1, DEADLINE).await;
    assert_eq!(records[0]["body"]["text"], "Working on the sales report…");
    let records = await_answers_of(&sim, &bot, 2, DEADLINE).await;
    let report = shown(&records[0]);
    assert!(
        report.contains("The sales report is ready.") && report.contains("Report: sales"),
        "{report}"
    );
    assert_eq!(
        records[0]["updates"], 4,
        "three progress edits and the result"
    );
    assert_eq!(records[1]["message"]["text"], "Done.");
    let query = records[1]["query"].to_string();
    assert!(query.contains("NOTIFICATION_TYPE_SILENT"), "{query}");
    // The edits and the note stay in the command's thread.
    assert_eq!(
        records[1]["message"]["thread"],
        records[0]["message"]["thread"]
    );

    let (status, _) = bot.terminate(DEADLINE).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(bot.counter("events_acked"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_are_kept_per_person_until_their_time_to_live() {
    let topic = Topic::fresh("example-notes").await;
    let sim = Sim::with_playground(&topic.topic, &[("/note", 1), ("/notes", 2)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("notes.db").display());
    let env = [
        ("CHATWORKER_STORE__URL", url.as_str()),
        ("NOTE_TTL_SECS", "3"),
    ];
    let mut bot = Worker::start_example("notes", &sim, &topic.subscription, &env).await;
    let space = "spaces/NOTES";
    for (i, text) in ["/note buy milk", "/note call Grace"].iter().enumerate() {
        sim.act(space, json!({"kind": "message", "text": text}))
            .await;
        await_answers_of(&sim, &bot, i + 1, DEADLINE).await;
    }
    sim.act(space, json!({"kind": "message", "text": "/notes"}))
        .await;
    let records = await_answers_of(&sim, &bot, 3, DEADLINE).await;
    assert!(shown(&records[1]).contains("Noted (2 kept for you)."));
    let listed = shown(&records[2]);
    assert!(
        listed.contains("buy milk") && listed.contains("call Grace"),
        "{listed}"
    );
    assert_eq!(
        records[2]["body"]["privateMessageViewer"]["name"], "users/1234567890",
        "shown to the person only"
    );
    // Past their time to live, they are gone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    sim.act(space, json!({"kind": "message", "text": "/notes"}))
        .await;
    let records = await_answers_of(&sim, &bot, 4, DEADLINE).await;
    assert!(
        shown(&records[3]).contains("You have no notes"),
        "{}",
        shown(&records[3])
    );
    let (status, _) = bot.terminate(DEADLINE).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_work_is_done_off_the_runtime_and_answered() {
    let topic = Topic::fresh("example-heavy").await;
    let sim = Sim::with_playground(&topic.topic, &[]).await;
    let env = [("HEAVY_WORK_MS", "50")];
    let mut bot = Worker::start_example("heavy", &sim, &topic.subscription, &env).await;
    let space = "spaces/HEAVY";
    for text in ["one", "two", "three"] {
        sim.act(space, json!({"kind": "message", "text": text}))
            .await;
    }
    let records = await_answers_of(&sim, &bot, 3, DEADLINE).await;
    let mut said: Vec<String> = records.iter().map(shown).collect();
    said.sort();
    for (answer, text) in said.iter().zip(["one", "three", "two"]) {
        assert!(
            answer.contains(&format!("Worked 50 ms on \"{text}\"")),
            "{answer}"
        );
    }
    let (status, _) = bot.terminate(DEADLINE).await;
    assert!(status.success(), "{status:?}");
}
