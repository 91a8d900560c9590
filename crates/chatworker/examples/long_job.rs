//! A long job: answer at once with a placeholder, edit it as the work
//! progresses, and replace it with the result when the job finishes.
//!
//! `/report sales` (or any message) posts "Working on it…" immediately,
//! edits it at each step, then replaces it with a card holding the result.
//! Every edit is a write within the space's quota (60 per minute), which the
//! context waits for; the event keeps its Pub/Sub lease meanwhile and is
//! acked only when the result is out. If the worker dies mid-job, Pub/Sub
//! redelivers the event and the same placeholder is found again by its ID:
//! nothing is posted twice.
//!
//!     CHATWORKER_DEV=1 cargo run --example long_job    # then open http://127.0.0.1:8086/playground
//!
//! JOB_STEP_MS sets how long each of the three steps takes (default 1000).

use chatworker::card::{CardBuilder, Section};
use chatworker::reply::Notify;
use chatworker::{App, Command, Context, HandlerError, Message, Reply};
use std::time::Duration;

/// How long each step of the job takes.
struct Job {
    step: Duration,
}

const STEPS: [&str; 3] = ["Fetching data", "Crunching numbers", "Drawing charts"];

async fn run_job(ctx: &Context<Job>, what: &str) -> Result<(), HandlerError> {
    let what = if what.is_empty() { "everything" } else { what };
    // Answer now: people see the app is on it.
    let working = ctx
        .placeholder(format!("Working on the {what} report…"))
        .await?;
    for (i, step) in STEPS.iter().enumerate() {
        tokio::time::sleep(ctx.state().step).await;
        let progress = format!(
            "Working on the {what} report… {step} ({}/{})",
            i + 1,
            STEPS.len()
        );
        ctx.update(&working.name, Reply::text(progress)).await?;
    }
    let card = CardBuilder::new()
        .header(format!("Report: {what}"), "ready")
        .section(
            Section::new()
                .columns(["Rows read: 12,345", "Anomalies: 0"])
                .decorated(
                    "Took",
                    format!("{:?}", ctx.state().step * STEPS.len() as u32),
                ),
        )
        .build()?;
    // The placeholder becomes the result: one message, edited in place.
    ctx.update(
        &working.name,
        Reply::text(format!("The {what} report is ready.")).with_card("report", card),
    )
    .await?;
    // A short, silent note for the thread's followers.
    ctx.send(Reply::text("Done.").notify(Notify::Silent))
        .await?;
    Ok(())
}

async fn report(ctx: Context<Job>, command: Command) -> Result<(), HandlerError> {
    run_job(&ctx, &command.text).await
}

async fn message(ctx: Context<Job>, message: Message) -> Result<(), HandlerError> {
    run_job(&ctx, message.argument()).await
}

#[tokio::main]
async fn main() -> Result<(), chatworker::RunError> {
    let step_ms = std::env::var("JOB_STEP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let job = Job {
        step: Duration::from_millis(step_ms),
    };
    let app = App::with_state(job)
        .command("/report", report)
        .message(message);
    chatworker::run(app).await
}
