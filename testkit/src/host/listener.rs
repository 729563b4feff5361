//! One queue-trigger listener, following the WebJobs Storage Queues extension's
//! `QueueListener` and `QueueProcessor`:
//!
//! * Get Messages (`batchSize`, a 10 min peek-lock); fetch again as soon as no more than
//!   `newBatchThreshold` invocations are still running, so at most batchSize +
//!   newBatchThreshold run at once.
//! * An empty queue (or a missing one, or a 5xx) backs off from 100 ms, doubling up to
//!   `maxPollingInterval`; finding messages resets the back-off.
//! * A message already dequeued more than `maxDequeueCount` times (its earlier attempts never
//!   completed), or one that cannot be decoded with `messageEncoding`, goes to
//!   `<queue>-poison` without an invocation.
//! * While an invocation runs, the peek-lock is renewed every half of its length.
//! * Success: Delete Message. Failure: if dequeueCount >= maxDequeueCount, Put Message into
//!   `<queue>-poison` (same wire text; the poison queue is created if missing), then Delete;
//!   else Update Message with `visibilityTimeout` so it comes back.
//! * `functionTimeout` exceeded: the invocation fails and the worker is recycled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::{format_timespan, QueueOptions, MIN_POLLING_INTERVAL};
use super::ids::new_guid;
use super::invoke::{invoke, queue_envelope, SysMetadata};
use super::journal::{
    InvocationRecord, InvocationStatus, Journal, PoisonRecord, RunningInvocation,
};
use super::worker::Worker;
use crate::queue::{QueueClient, QueueError, QueueMessage};

/// How long in-flight invocations may finish after the host is asked to stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Everything one listener needs.
pub(crate) struct QueueListener {
    pub function: String,
    pub binding: String,
    pub queue: String,
    pub poison_queue: String,
    pub client: QueueClient,
    pub options: QueueOptions,
    pub peek_lock: Duration,
    pub function_timeout: Option<Duration>,
    pub worker: Arc<Worker>,
    pub journal: Arc<Journal>,
    pub http: reqwest::Client,
    /// Invocations (and poison moves) not finished yet.
    pub in_flight: Arc<AtomicUsize>,
}

/// Counts a message as in flight until dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl QueueListener {
    /// Polls until `shutdown` turns true, then lets in-flight invocations finish for a while.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        self.journal.log(format!(
            "Storage queue listener started (function {}, queue name='{}', storage account name='{}')",
            self.function,
            self.queue,
            self.client.account().name()
        ));
        let mut running: JoinSet<()> = JoinSet::new();
        let mut delay = MIN_POLLING_INTERVAL;
        let mut found_since_delay = false;
        let mut last_error = String::new();
        'poll: loop {
            while running.len() > self.options.new_batch_threshold as usize {
                tokio::select! {
                    _ = running.join_next() => {}
                    _ = shutdown.changed() => break 'poll,
                }
            }
            while running.try_join_next().is_some() {}
            if *shutdown.borrow() {
                break;
            }
            match self
                .client
                .get_messages(&self.queue, self.options.batch_size, self.peek_lock)
                .await
            {
                Ok(batch) if !batch.is_empty() => {
                    last_error.clear();
                    found_since_delay = true;
                    for message in batch {
                        self.in_flight.fetch_add(1, Ordering::SeqCst);
                        let guard = InFlight(Arc::clone(&self.in_flight));
                        let this = Arc::clone(&self);
                        running.spawn(async move {
                            let _guard = guard;
                            this.process(message).await;
                        });
                    }
                    continue;
                }
                Ok(_) => last_error.clear(),
                Err(e) => {
                    let text = e.to_string();
                    if text != last_error {
                        self.journal.queue_failed(format!(
                            "Polling queue '{}' failed (backing off): {text}",
                            self.queue
                        ));
                        last_error = text;
                    }
                }
            }
            delay = if found_since_delay {
                MIN_POLLING_INTERVAL
            } else {
                (delay * 2).min(self.options.max_polling_interval)
            };
            found_since_delay = false;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => break,
            }
        }
        if !running.is_empty() {
            let drained = tokio::time::timeout(STOP_GRACE, async {
                while running.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                self.journal.log(format!(
                    "Invocations still running after {STOP_GRACE:?} were abandoned; their messages reappear when the peek-lock expires"
                ));
                running.abort_all();
            }
        }
        self.journal.log(format!(
            "Storage queue listener stopped (queue name='{}')",
            self.queue
        ));
    }

    /// One message, from the checks before invocation to its completion.
    async fn process(&self, message: QueueMessage) {
        let max = self.options.max_dequeue_count;
        if message.dequeue_count > max {
            let reason = format!(
                "DequeueCount {} exceeds maxDequeueCount {max} before invocation: earlier attempts never completed (host stopped or peek-lock expired)",
                message.dequeue_count
            );
            self.poison(&message, &message.pop_receipt, &reason).await;
            return;
        }
        let text = match self.options.message_encoding.decode(&message.text) {
            Ok(text) => text,
            Err(e) => {
                let reason = format!(
                    "{e}: the message cannot be decoded with messageEncoding {:?}",
                    self.options.message_encoding
                );
                self.poison(&message, &message.pop_receipt, &reason).await;
                return;
            }
        };
        let (record, pop_receipt) = self.invoke_with_lock(&message, &text).await;
        let failure = match &record.status {
            InvocationStatus::Succeeded => None,
            InvocationStatus::Failed(reason) => Some(reason.clone()),
        };
        self.journal.invocation(record);
        match failure {
            None => self.complete(
                self.client
                    .delete_message(&self.queue, &message.id, &pop_receipt)
                    .await,
                "delete",
            ),
            Some(reason) if message.dequeue_count >= max => {
                self.poison(&message, &pop_receipt, &reason).await
            }
            Some(_) => {
                let result = self
                    .client
                    .update_visibility(
                        &self.queue,
                        &message.id,
                        &pop_receipt,
                        self.options.visibility_timeout,
                    )
                    .await;
                self.complete(result.map(drop), "release");
            }
        }
    }

    /// Invokes the function while renewing the peek-lock, within the function timeout.
    /// Returns the record and the message's latest pop receipt.
    async fn invoke_with_lock(
        &self,
        message: &QueueMessage,
        text: &str,
    ) -> (InvocationRecord, String) {
        let invocation_id = new_guid();
        let sys = SysMetadata {
            utc_now: SystemTime::now(),
            rand_guid: new_guid(),
        };
        let envelope = queue_envelope(&self.function, &self.binding, text, message, &sys);
        self.journal.log(format!(
            "Executing 'Functions.{}' (Reason='New queue message detected on '{}'.', Id={invocation_id})",
            self.function, self.queue
        ));
        self.journal.log(format!(
            "Trigger Details: MessageId: {}, DequeueCount: {}, InsertedOn: {}",
            message.id,
            message.dequeue_count,
            message
                .insertion_time
                .map(super::journal::timestamp)
                .unwrap_or_default()
        ));
        let (started, started_at) = (Instant::now(), SystemTime::now());
        self.journal.started(
            &invocation_id,
            RunningInvocation {
                function: self.function.clone(),
                trigger: format!(
                    "queue '{}', message {}, dequeue count {}",
                    self.queue, message.id, message.dequeue_count
                ),
                started: started_at,
            },
        );
        let mut pop_receipt = message.pop_receipt.clone();
        let mut generation = 0;
        let outcome = match self.worker.ready().await {
            Err(e) => Err((None, e)),
            Ok(worker) => {
                generation = worker.generation;
                let call = invoke(
                    &self.http,
                    worker.port,
                    &self.function,
                    &invocation_id,
                    &envelope,
                );
                tokio::pin!(call);
                let timeout = async {
                    match self.function_timeout {
                        Some(limit) => tokio::time::sleep(limit).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(timeout);
                let half = self.peek_lock / 2;
                let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
                loop {
                    tokio::select! {
                        r = &mut call => break r.map_err(|f| (f.status, f.reason)),
                        () = &mut timeout => {
                            let limit = self.function_timeout.unwrap_or_default();
                            self.journal.log(format!(
                                "Timeout value of {} exceeded by function 'Functions.{}' (Id: '{invocation_id}'). Initiating cancellation.",
                                format_timespan(limit), self.function
                            ));
                            self.journal.log(format!(
                                "A function timeout has occurred. Restarting worker process executing invocationId '{invocation_id}'."
                            ));
                            self.worker.kill(Some(generation), &format!("function timeout of invocation {invocation_id}"));
                            break Err((None, format!(
                                "Timeout value of {} was exceeded by function: Functions.{}", format_timespan(limit), self.function
                            )));
                        }
                        _ = renew.tick() => {
                            match self.client.update_visibility(&self.queue, &message.id, &pop_receipt, self.peek_lock).await {
                                Ok(receipt) => pop_receipt = receipt.pop_receipt,
                                Err(e) => self.journal.queue_failed(format!("Renewing the peek-lock of message {} failed: {e}", message.id)),
                            }
                        }
                    }
                }
            }
        };
        let duration = started.elapsed();
        let (status, http_status, logs) = match outcome {
            Ok((code, logs)) => (InvocationStatus::Succeeded, Some(code), logs),
            Err((code, reason)) => (InvocationStatus::Failed(reason), code, Vec::new()),
        };
        for line in &logs {
            self.journal
                .log(format!("[Functions.{}] {line}", self.function));
        }
        match &status {
            InvocationStatus::Succeeded => self.journal.log(format!(
                "Executed 'Functions.{}' (Succeeded, Id={invocation_id}, Duration={}ms)",
                self.function,
                duration.as_millis()
            )),
            InvocationStatus::Failed(reason) => {
                self.journal.log(format!(
                    "Executed 'Functions.{}' (Failed, Id={invocation_id}, Duration={}ms)",
                    self.function,
                    duration.as_millis()
                ));
                self.journal
                    .log(format!("Result: Failure Exception: {reason}"));
            }
        }
        let record = InvocationRecord {
            function: self.function.clone(),
            invocation_id,
            message_id: Some(message.id.clone()),
            dequeue_count: Some(message.dequeue_count),
            http_status,
            status,
            started: started_at,
            duration,
            worker_generation: generation,
            logs,
        };
        (record, pop_receipt)
    }

    /// Copies the message (same wire text) to the poison queue, creating it if needed, then
    /// deletes it from the trigger queue.
    async fn poison(&self, message: &QueueMessage, pop_receipt: &str, reason: &str) {
        self.journal.log(format!(
            "Message has reached MaxDequeueCount of {}. Moving message to queue '{}'. (message {}, dequeue count {}, reason: {reason})",
            self.options.max_dequeue_count, self.poison_queue, message.id, message.dequeue_count
        ));
        let _ = self.client.create_queue(&self.poison_queue).await;
        if let Err(e) = self
            .client
            .put_message(&self.poison_queue, &message.text)
            .await
        {
            self.journal.queue_failed(format!(
                "Moving message {} to '{}' failed; it stays in '{}': {e}",
                message.id, self.poison_queue, self.queue
            ));
            return;
        }
        self.complete(
            self.client
                .delete_message(&self.queue, &message.id, pop_receipt)
                .await,
            "delete",
        );
        self.journal.poisoned(PoisonRecord {
            function: self.function.clone(),
            queue: self.queue.clone(),
            poison_queue: self.poison_queue.clone(),
            message_id: message.id.clone(),
            dequeue_count: message.dequeue_count,
            reason: reason.to_string(),
        });
    }

    /// Logs a failed delete or release, except when the message is already gone (the host
    /// ignores those: someone else completed it).
    fn complete(&self, result: Result<(), QueueError>, what: &str) {
        match result {
            Ok(()) => {}
            Err(e) if e.is_gone() => self.journal.queue_failed(format!(
                "Unable to {what} queue message (already gone): {e}"
            )),
            Err(e) => self
                .journal
                .queue_failed(format!("Unable to {what} queue message: {e}")),
        }
    }
}
