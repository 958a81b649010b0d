//! The job runtime: apalis 1.0 drives any [`Queue`] through Ferry's own
//! `apalis_core::backend::Backend` ([`QueueBackend`]), with tower's
//! concurrency limit, apalis' catch-panic layer, acks after completion,
//! heartbeats for long jobs and a graceful shutdown that hands unstarted
//! deliveries back. Only the worker role runs jobs, so the runtime lives
//! here; the queue protocol it drives (`Queue`, `Job`, `Delivery` and the
//! backends) is `ferry_shared::queue`. See `design.md` beside this file.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use apalis::layers::catch_panic::CatchPanicLayer;
use apalis::layers::limit::GlobalConcurrencyLimitLayer;
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::error::{BoxDynError, WorkerError};
use apalis_core::layers::{Identity, Layer, Service};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use ferry_shared::queue::{Delivery, Job, Queue};
use ferry_shared::{Error, Result};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long one fetch blocks when the queue is idle; also bounds how long a
/// shutdown waits for the fetch in progress.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// Receipts acknowledged per round trip at most.
const ACK_BATCH: usize = 1024;
/// A job still asking to be retried after this many deliveries is acked and
/// logged instead: the metadata store, not the queue, keeps its state.
pub const MAX_DELIVERIES: u32 = 20;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The worker's identity is `<name_prefix>-<ulid>`, fresh per start.
    pub name_prefix: String,
    /// Jobs run at the same time at most (at least 1).
    pub concurrency: usize,
    /// How long a stopping worker lets its running jobs finish; then it
    /// hands what is left back to the queue (at once, for any other worker)
    /// and stops. `None`: it waits for every running job.
    pub shutdown_grace: Option<Duration>,
}

impl WorkerOptions {
    pub fn new(name_prefix: impl Into<String>, concurrency: usize) -> Self {
        WorkerOptions {
            name_prefix: name_prefix.into(),
            concurrency,
            shutdown_grace: None,
        }
    }
}

/// How a job handler failed, and so what happens to its delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Leave the delivery unacknowledged: it is redelivered once the lease
    /// runs out (up to [`MAX_DELIVERIES`]).
    #[error("retry: {0}")]
    Retry(String),
    /// Acknowledge the delivery and log the reason: retrying cannot help.
    #[error("abort: {0}")]
    Abort(String),
}

/// Runs an apalis worker over `queue` with a fresh identity
/// (`<name_prefix>-<ulid>`, logged), `concurrency` jobs at a time, calling
/// `handler` for each job. A delivery is acked (batched) when the handler
/// returns `Ok` or [`JobError::Abort`] (a panic counts as an abort); in-flight
/// deliveries are touched every lease/3 so long jobs are not reclaimed. When
/// `shutdown` resolves the worker stops taking jobs, lets the running ones
/// finish (for at most `shutdown_grace`, after which the running jobs are
/// dropped and their deliveries handed back), hands fetched but unstarted
/// ones back, flushes its acks and returns. Queue outages are retried with
/// a backoff, never fatal.
pub async fn run_worker<H, Fut>(
    queue: Arc<dyn Queue>,
    options: WorkerOptions,
    handler: H,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()>
where
    H: Fn(Job) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    let concurrency = options.concurrency.max(1);
    let identity = format!("{}-{}", options.name_prefix, ulid::Ulid::new());
    let permits = Arc::new(Semaphore::new(concurrency));
    let (acks, acks_rx) = mpsc::unbounded_channel();
    let runtime = Arc::new(Runtime {
        queue,
        consumer: identity.clone(),
        in_flight: Mutex::default(),
        acks,
        permits: Arc::clone(&permits),
        concurrency,
    });
    let stop = CancellationToken::new();
    let stopping = CancellationToken::new();
    let hand_back = CancellationToken::new();
    let _grace = options.shutdown_grace.map(|grace| {
        let (runtime, stopping, hand_back) = (Arc::clone(&runtime), stopping.clone(), hand_back.clone());
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            stopping.cancelled().await;
            let running = lock(&runtime.in_flight).len();
            tracing::info!(
                running,
                grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                "worker stopping: running jobs get the grace period"
            );
            tokio::time::sleep(grace).await;
            hand_back.cancel();
        }))
    });
    let background = Background {
        heartbeat: tokio::spawn(heartbeat(Arc::clone(&runtime), stop.clone())),
        acker: tokio::spawn(acker(Arc::clone(&runtime), acks_rx, stop.clone())),
        stop: stop.clone(),
        _guard: stop.drop_guard(),
    };
    let backend = QueueBackend {
        runtime: Arc::clone(&runtime),
        buffer: VecDeque::new(),
        fetching: None,
        backoff: None,
        failures: 0,
        background: Some(background),
        closing: None,
    };
    tracing::info!(worker = %identity, concurrency, "queue worker started");
    // The limit shares `permits` with the backend, which sizes its fetches
    // by the free ones; the panic guard sits inside `Settle`, so a panic is
    // settled like any other outcome.
    let service = Settle {
        inner: CatchPanicLayer::with_panic_handler(on_panic).layer(RunHandler { handler }),
        runtime,
        hand_back,
    };
    let worker = WorkerBuilder::new(identity.as_str())
        .backend(backend)
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(permits))
        .build(service);
    let result = worker
        .run_until(async move {
            shutdown.await;
            stopping.cancel();
            Ok::<(), WorkerError>(())
        })
        .await;
    tracing::info!(worker = %identity, "queue worker stopped");
    result.map_err(|error| {
        Error::internal_with_source(format!("queue worker {identity} failed: {error}"), error)
    })
}

/// What the backend, the job service and the background tasks share.
struct Runtime {
    queue: Arc<dyn Queue>,
    consumer: String,
    /// Receipts fetched and not yet finished: what the heartbeat touches.
    in_flight: Mutex<HashSet<String>>,
    acks: mpsc::UnboundedSender<String>,
    permits: Arc<Semaphore>,
    concurrency: usize,
}

impl Runtime {
    /// Slots a fetch may fill: the free permits plus the one the concurrency
    /// layer holds for the task apalis is about to ask for.
    fn free_slots(&self) -> usize {
        (self.permits.available_permits() + 1).clamp(1, self.concurrency)
    }

    fn track(&self, deliveries: &[Delivery]) {
        let mut in_flight = lock(&self.in_flight);
        for delivery in deliveries {
            in_flight.insert(delivery.receipt.clone());
        }
    }

    fn untrack(&self, receipts: &[String]) {
        let mut in_flight = lock(&self.in_flight);
        for receipt in receipts {
            in_flight.remove(receipt);
        }
    }

    /// Settles a delivery after its handler returned.
    fn finish(&self, delivery: &Delivery, outcome: &std::result::Result<(), JobError>) {
        let job = &delivery.job;
        let ack = match outcome {
            Ok(()) => true,
            Err(JobError::Abort(reason)) => {
                tracing::warn!(job_id = %job.id, kind = job.kind.as_str(), attempt = delivery.attempt, reason, "job aborted");
                true
            }
            Err(JobError::Retry(reason)) if delivery.attempt >= MAX_DELIVERIES => {
                tracing::error!(job_id = %job.id, kind = job.kind.as_str(), attempt = delivery.attempt, reason, "job given up after too many deliveries");
                true
            }
            Err(JobError::Retry(reason)) => {
                tracing::info!(job_id = %job.id, kind = job.kind.as_str(), attempt = delivery.attempt, reason, "job will be redelivered after its lease");
                false
            }
        };
        if ack && self.acks.send(delivery.receipt.clone()).is_err() {
            tracing::warn!(job_id = %job.id, "ack dropped: the worker is stopping");
        }
        self.untrack(std::slice::from_ref(&delivery.receipt));
    }

    /// Hands a running job's delivery back unfinished (the grace period of
    /// a shutdown ran out): any worker takes it at once. The metadata store
    /// fences whatever the dropped run may still have in flight.
    async fn hand_back(&self, delivery: &Delivery) {
        let job = &delivery.job;
        let receipts = std::slice::from_ref(&delivery.receipt);
        match self.queue.release(&self.consumer, receipts).await {
            Ok(()) => {
                tracing::warn!(job_id = %job.id, kind = job.kind.as_str(), "job handed back unfinished: the shutdown grace period ran out")
            }
            Err(error) => {
                tracing::warn!(job_id = %job.id, %error, "handing a job back failed; it returns after its lease")
            }
        }
        self.untrack(receipts);
    }
}

struct Background {
    stop: CancellationToken,
    heartbeat: JoinHandle<()>,
    acker: JoinHandle<()>,
    /// Stops the background tasks if the worker is dropped without closing.
    _guard: DropGuard,
}

/// Touches every in-flight delivery each lease/3.
async fn heartbeat(runtime: Arc<Runtime>, stop: CancellationToken) {
    let every = (runtime.queue.lease() / 3).max(Duration::from_millis(30));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let receipts: Vec<String> = lock(&runtime.in_flight).iter().cloned().collect();
        if receipts.is_empty() {
            continue;
        }
        if let Err(error) = runtime.queue.touch(&runtime.consumer, &receipts).await {
            tracing::warn!(%error, deliveries = receipts.len(), "queue heartbeat failed");
        }
    }
}

/// Acknowledges finished deliveries in batches: whatever finished while the
/// previous batch was on the wire goes in the next one. On `stop` it flushes
/// what is left and ends.
async fn acker(
    runtime: Arc<Runtime>,
    mut receipts: mpsc::UnboundedReceiver<String>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    loop {
        let stopping = tokio::select! {
            biased;
            n = receipts.recv_many(&mut batch, ACK_BATCH) => n == 0,
            () = stop.cancelled() => true,
        };
        if stopping {
            while let Ok(receipt) = receipts.try_recv() {
                batch.push(receipt);
            }
        }
        if !batch.is_empty() {
            ack_with_retry(&*runtime.queue, &batch).await;
            batch.clear();
        }
        if stopping {
            return;
        }
    }
}

async fn ack_with_retry(queue: &dyn Queue, receipts: &[String]) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match queue.ack(receipts).await {
            Ok(()) => return,
            Err(error) if attempt < 5 => {
                tracing::warn!(%error, attempt, deliveries = receipts.len(), "queue ack failed, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => {
                // Harmless: the deliveries come back after their lease and a
                // job delivered twice is fenced by the metadata store.
                tracing::error!(%error, deliveries = receipts.len(), "queue ack failed, jobs will be redelivered");
            }
        }
    }
}

// ---------------------------------------------------------------- backend

/// Ferry's apalis backend over any [`Queue`]: it fetches as many deliveries
/// as there are free slots (one blocking fetch, no polling), keeps them in
/// flight for the heartbeat, and on close hands unstarted ones back and
/// flushes the acks. Queue errors are logged and retried with a backoff (up
/// to 5 s), so an outage pauses the worker instead of ending it.
pub struct QueueBackend {
    runtime: Arc<Runtime>,
    buffer: VecDeque<Delivery>,
    fetching: Option<BoxFuture<'static, Result<Vec<Delivery>>>>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    failures: u32,
    background: Option<Background>,
    closing: Option<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for QueueBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBackend")
            .field("consumer", &self.runtime.consumer)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl QueueBackend {
    fn task(delivery: Delivery) -> Task<Delivery> {
        let id = TaskId::from_string(format!("{}#{}", delivery.receipt, delivery.attempt));
        let attempt = delivery.attempt as usize;
        TaskBuilder::new(delivery).task_id(id).attempt(attempt).build()
    }
}

impl Backend for QueueBackend {
    type Task = Task<Delivery>;
    type Error = Error;

    fn poll_ready(&mut self, _: &mut Context<'_>, _: &WorkerContext) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, _: &WorkerContext) -> Poll<Option<Result<Self::Task>>> {
        loop {
            if let Some(delivery) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(Self::task(delivery))));
            }
            if let Some(backoff) = &mut self.backoff {
                ready!(backoff.as_mut().poll(cx));
                self.backoff = None;
            }
            let runtime = &self.runtime;
            let fetching = self.fetching.get_or_insert_with(|| {
                let runtime = Arc::clone(runtime);
                let max = runtime.free_slots();
                async move { runtime.queue.fetch(&runtime.consumer, max, FETCH_WAIT).await }.boxed()
            });
            let result = ready!(fetching.as_mut().poll(cx));
            self.fetching = None;
            match result {
                Ok(deliveries) => {
                    self.failures = 0;
                    self.runtime.track(&deliveries);
                    self.buffer.extend(deliveries);
                }
                Err(error) => {
                    self.failures += 1;
                    let delay = (Duration::from_millis(100) * 2u32.saturating_pow(self.failures.min(6)))
                        .min(Duration::from_secs(5));
                    tracing::warn!(%error, failures = self.failures, ?delay, "queue fetch failed");
                    self.backoff = Some(Box::pin(tokio::time::sleep(delay)));
                }
            }
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, _: &WorkerContext) -> Poll<Result<()>> {
        if self.closing.is_none() {
            let runtime = Arc::clone(&self.runtime);
            let fetching = self.fetching.take();
            let mut unstarted: Vec<Delivery> = self.buffer.drain(..).collect();
            let background = self.background.take();
            self.closing = Some(
                async move {
                    if let Some(fetching) = fetching
                        && let Ok(deliveries) = fetching.await
                    {
                        unstarted.extend(deliveries);
                    }
                    if !unstarted.is_empty() {
                        let receipts: Vec<String> = unstarted.into_iter().map(|d| d.receipt).collect();
                        if let Err(error) = runtime.queue.release(&runtime.consumer, &receipts).await {
                            tracing::warn!(%error, deliveries = receipts.len(), "handing deliveries back failed, they return after their lease");
                        }
                        runtime.untrack(&receipts);
                    }
                    if let Some(background) = background {
                        background.stop.cancel();
                        let _ = background.heartbeat.await;
                        let _ = background.acker.await;
                    }
                }
                .boxed(),
            );
        }
        if let Some(closing) = &mut self.closing {
            ready!(closing.as_mut().poll(cx));
        }
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for QueueBackend {
    type Args = Delivery;
    type Id = String;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        Identity::new()
    }
}

// ---------------------------------------------------------------- services

/// Calls the handler with the delivery's job. apalis' `CatchPanicLayer`
/// wraps it, so a panic (while building the future or while it runs) comes
/// out as an error.
struct RunHandler<H> {
    handler: H,
}

impl<H, Fut> Service<Task<Delivery>> for RunHandler<H>
where
    H: Fn(Job) -> Fut,
    Fut: Future<Output = std::result::Result<(), JobError>>,
{
    type Response = ();
    type Error = JobError;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<Delivery>) -> Self::Future {
        (self.handler)(task.args.job)
    }
}

/// Runs the (panic-guarded) handler for one delivery and settles it (ack,
/// or leave it for redelivery) when the handler returns or panics.
struct Settle<S> {
    inner: S,
    runtime: Arc<Runtime>,
    /// Cancelled when a stopping worker's grace period runs out.
    hand_back: CancellationToken,
}

impl<S> Service<Task<Delivery>> for Settle<S>
where
    S: Service<Task<Delivery>, Response = (), Error = BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = JobError;
    type Future = BoxFuture<'static, std::result::Result<(), JobError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(job_error)
    }

    fn call(&mut self, task: Task<Delivery>) -> Self::Future {
        let delivery = task.args.clone();
        let running = self.inner.call(task);
        let runtime = Arc::clone(&self.runtime);
        let hand_back = self.hand_back.clone();
        async move {
            let outcome = tokio::select! {
                biased;
                outcome = running => outcome.map_err(job_error),
                () = hand_back.cancelled() => {
                    runtime.hand_back(&delivery).await;
                    return Err(JobError::Retry("handed back at shutdown".into()));
                }
            };
            runtime.finish(&delivery, &outcome);
            outcome
        }
        .boxed()
    }
}

/// Maps what the panic-guarded handler returned: its own [`JobError`], or
/// the abort [`on_panic`] made of a panic.
fn job_error(error: BoxDynError) -> JobError {
    match error.downcast::<JobError>() {
        Ok(error) => *error,
        Err(error) => JobError::Abort(error.to_string()),
    }
}

/// What a caught panic becomes: an abort (acked and logged), carrying the
/// panic's message.
///
/// apalis' default handler (an `AbortError` over a `PanicError`) would do,
/// but its type is a function pointer over `Box<dyn Any + Send + 'static>`,
/// and rustc cannot then prove a caller's `tokio::spawn(run_worker(..))`
/// future `Send` ("implementation of `FnOnce` is not general enough"); a
/// function generic over the box's lifetime avoids that.
fn on_panic(panic: &Box<dyn std::any::Any + Send + '_>) -> JobError {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".to_owned());
    JobError::Abort(format!("the job handler panicked: {text}"))
}

/// Locks a std mutex, recovering the data if a holder panicked (the guarded
/// state stays consistent: no critical section can panic half-way).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
