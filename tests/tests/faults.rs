//! Faults between the pieces of a turn: whatever fails, an acknowledged message gets its reply
//! or a stored failure, and a message that could not be taken is not acknowledged (so the
//! client's resend succeeds later).

use chat_core::storage::{self, Db, Pools};
use chat_tests::spawn_default;
use diesel_async::SimpleAsyncConnection;

/// Runs SQL on the stack's SQLite database beside the core (to inject a fault).
async fn sqlite(db: &Db, sql: &str) {
    let Pools::Sqlite(pool) = db.pools() else {
        panic!("this test injects faults with SQLite triggers");
    };
    let mut conn = pool.get().await.expect("connection");
    conn.batch_execute(sql).await.expect("fault SQL");
}

#[tokio::test]
async fn a_failing_write_before_the_ack_refuses_the_message_and_the_resend_is_answered() {
    let stack = spawn_default().await;
    let (mut ws, _) = stack.connect("alice").await;
    ws.send(serde_json::json!({"type": "chat_update", "data": {"action": "create"}}))
        .await;
    let created = ws.recv_type("chat_update").await;
    let chat = created["data"]["chatId"]
        .as_str()
        .expect("chat id")
        .to_string();
    // Every update of a user row fails from now on: the sender's activity refresh is the
    // first write a message makes.
    sqlite(
        &stack.db,
        "CREATE TRIGGER fail_user_update BEFORE UPDATE ON users \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
    )
    .await;
    ws.send_message(Some(&chat), "are you there?", "m1").await;
    let answer = ws.recv().await;
    assert_eq!(
        answer["type"], "error",
        "no ack for a message not taken: {answer}"
    );
    assert_eq!(answer["data"]["code"], 500);
    assert_eq!(answer["data"]["retryable"], true);
    assert_eq!(answer["data"]["messageId"], "m1");
    assert!(
        storage::find_by_client_id(&stack.db, "alice", "m1")
            .await
            .expect("lookup")
            .is_none(),
        "nothing was stored"
    );

    sqlite(&stack.db, "DROP TRIGGER fail_user_update;").await;
    ws.send_message(Some(&chat), "are you there?", "m1").await;
    let ack = ws.recv_type("ack").await;
    assert_eq!(
        ack["data"]["duplicate"], false,
        "the resend is the first copy stored"
    );
    let reply = ws.recv_reply().await;
    assert!(
        reply
            .iter()
            .any(|f| f["type"] == "message" && f["data"]["message"]["role"] == "assistant"),
        "the resend is answered: {reply:?}"
    );
}
