//! The line each chat's replies wait in, so they run one at a time in the order of the
//! messages that asked.
//!
//! A lock taken inside each reply's task is not enough: tasks start in whatever order the
//! runtime polls them (a worker runs the task it spawned last first, and two workers race), so
//! two replies owed at once could run out of turn, the later one answering first without the
//! earlier one's reply in its prompt. Here a place is taken synchronously ([`ReplyOrder::join`])
//! where the order is known: under the chat's `seq` lock right after the message is stored, or
//! in `seq` order by a start that finds replies owed. The task then waits for its place
//! ([`Place::ready`]); a place given up before its turn (its task dropped) is skipped.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Per-chat lines of places (see the module comment).
#[derive(Default, Clone)]
pub struct ReplyOrder {
    lines: Arc<Mutex<HashMap<String, Line>>>,
}

/// One chat's line: the places `serving..next` are taken, `serving` holds the turn (or will as
/// soon as its task looks), and the places in `left` were given up while they waited.
struct Line {
    next: u64,
    serving: watch::Sender<u64>,
    left: BTreeSet<u64>,
}

/// A place in a chat's line, given up when dropped.
pub struct Place {
    chat_id: String,
    ticket: u64,
    turn: watch::Receiver<u64>,
    order: ReplyOrder,
}

impl ReplyOrder {
    /// Takes the next place in `chat_id`'s line, behind every place taken before.
    pub fn join(&self, chat_id: &str) -> Place {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let line = lines.entry(chat_id.to_string()).or_insert_with(|| Line {
            next: 0,
            serving: watch::Sender::new(0),
            left: BTreeSet::new(),
        });
        let ticket = line.next;
        line.next += 1;
        Place {
            chat_id: chat_id.to_string(),
            ticket,
            turn: line.serving.subscribe(),
            order: self.clone(),
        }
    }

    /// Chats with a line (places taken and not given up).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn give_up(&self, chat_id: &str, ticket: u64) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        // The line exists while any of its places does: it goes only when the last is given up.
        let Some(line) = lines.get_mut(chat_id) else {
            return;
        };
        let mut serving = *line.serving.borrow();
        if serving != ticket {
            line.left.insert(ticket);
            return;
        }
        serving += 1;
        while line.left.remove(&serving) {
            serving += 1;
        }
        if serving == line.next {
            lines.remove(chat_id);
        } else {
            line.serving.send_replace(serving);
        }
    }
}

impl Place {
    /// Waits until every place taken before this one has been given up.
    pub async fn ready(&mut self) {
        let ticket = self.ticket;
        // The sender lives in the line, and the line while this place does: no error.
        let _ = self.turn.wait_for(|serving| *serving == ticket).await;
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.order.give_up(&self.chat_id, self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    fn is_ready(place: &mut Place) -> bool {
        place.ready().now_or_never().is_some()
    }

    #[test]
    fn places_hold_the_turn_in_the_order_they_were_taken_whatever_order_they_wait_in() {
        let order = ReplyOrder::default();
        let mut first = order.join("c");
        let mut second = order.join("c");
        let mut third = order.join("c");
        let mut other_chat = order.join("d");
        assert!(!is_ready(&mut third));
        assert!(!is_ready(&mut second));
        assert!(is_ready(&mut first));
        assert!(is_ready(&mut other_chat), "chats have lines of their own");
        drop(first);
        assert!(!is_ready(&mut third));
        assert!(is_ready(&mut second));
        drop(second);
        assert!(is_ready(&mut third));
        drop(third);
        drop(other_chat);
        assert_eq!(order.len(), 0, "empty lines are forgotten");
    }

    #[test]
    fn a_place_given_up_before_its_turn_is_skipped() {
        let order = ReplyOrder::default();
        let first = order.join("c");
        let second = order.join("c");
        let mut third = order.join("c");
        drop(second);
        assert!(!is_ready(&mut third), "the first still holds the turn");
        drop(first);
        assert!(is_ready(&mut third));
        drop(third);
        assert_eq!(order.len(), 0);
        // A new line starts afresh.
        let mut again = order.join("c");
        assert!(is_ready(&mut again));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_started_in_any_order_run_in_the_order_of_their_places() {
        let order = ReplyOrder::default();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let places: Vec<Place> = (0..50).map(|_| order.join("c")).collect();
        let mut tasks = Vec::new();
        // Spawned last first: each would win a lock taken inside the task.
        for (i, mut place) in places.into_iter().enumerate().rev() {
            let (ran, running) = (ran.clone(), running.clone());
            tasks.push(tokio::spawn(async move {
                place.ready().await;
                assert!(!running.swap(true, SeqCst), "two places hold the turn");
                ran.lock().unwrap_or_else(|p| p.into_inner()).push(i);
                tokio::task::yield_now().await;
                running.store(false, SeqCst);
            }));
        }
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap_or_else(|_| panic!("a place never got its turn"))
                .unwrap_or_else(|e| panic!("task: {e}"));
        }
        let ran = ran.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(ran, (0..50).collect::<Vec<_>>());
        assert_eq!(order.len(), 0);
    }
}
