//! The delivery engine: a bounded queue and a worker per destination.
//!
//! Producers never wait on the network: `submit` returns at once with a handle to
//! the eventual report. Each destination delivers in order, one at a time, so a
//! receiver that hangs or fails delays only itself. A full queue is refused, never
//! silently emptied: the producer is told and can retry later.

use super::destination::{Channel, Delivery};
use super::sender::{DeliveryReport, Sender};
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{destination}: {capacity} notifications are already waiting; try again later")]
pub struct QueueFull {
    pub destination: String,
    pub capacity: usize,
}

struct Job {
    delivery: Delivery,
    enqueued: Instant,
    done: oneshot::Sender<DeliveryReport>,
}

type QueueKey = (Channel, String, bool, bool);

/// The queues and their workers. Dropping the last handle aborts every worker, so a
/// replica that stops dispatching (lost leadership, shutdown) sends nothing more,
/// not even what was queued.
#[derive(Default)]
struct Queues(Mutex<HashMap<QueueKey, (mpsc::Sender<Job>, tokio::task::AbortHandle)>>);

impl Drop for Queues {
    fn drop(&mut self) {
        let queues = match self.0.get_mut() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (_, (_, worker)) in queues.drain() {
            worker.abort();
        }
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    sender: Arc<Sender>,
    capacity: usize,
    queues: Arc<Queues>,
    metrics: Metrics,
}

impl Dispatcher {
    /// Must be called within a Tokio runtime: workers are spawned on first use.
    pub fn new(sender: impl Into<Arc<Sender>>, capacity: usize, metrics: Metrics) -> Self {
        Dispatcher {
            sender: sender.into(),
            capacity: capacity.max(1),
            queues: Arc::new(Queues::default()),
            metrics,
        }
    }

    /// Queues `delivery`; the receiver yields its report once delivered or given up.
    pub fn submit(
        &self,
        delivery: Delivery,
    ) -> Result<oneshot::Receiver<DeliveryReport>, QueueFull> {
        let channel = delivery.destination.channel.as_str();
        let full = QueueFull {
            destination: delivery.destination.display(),
            capacity: self.capacity,
        };
        let key = delivery.destination.queue_key();
        let (done, report) = oneshot::channel();
        let mut job = Job {
            delivery,
            enqueued: Instant::now(),
            done,
        };
        let mut queues = match self.queues.0.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Twice at most: a closed queue (its worker gone) is replaced once.
        for _ in 0..2 {
            let queue = queues
                .entry(key.clone())
                .or_insert_with(|| self.spawn_worker());
            match queue.0.try_send(job) {
                Ok(()) => {
                    self.metrics.queue_depth(channel, 1);
                    return Ok(report);
                }
                Err(mpsc::error::TrySendError::Full(_)) => break,
                Err(mpsc::error::TrySendError::Closed(returned)) => {
                    job = returned;
                    queues.remove(&key);
                }
            }
        }
        self.metrics.queue_full(channel);
        Err(full)
    }

    fn spawn_worker(&self) -> (mpsc::Sender<Job>, tokio::task::AbortHandle) {
        let (tx, mut rx) = mpsc::channel::<Job>(self.capacity);
        let sender = self.sender.clone();
        let metrics = self.metrics.clone();
        let worker = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let channel = job.delivery.destination.channel.as_str();
                metrics.queue_depth(channel, -1);
                let report = sender.deliver(&job.delivery).await;
                metrics.delivery_latency(channel, job.enqueued.elapsed());
                let _ = job.done.send(report);
            }
        });
        (tx, worker.abort_handle())
    }
}
