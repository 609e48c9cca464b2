//! The diesel schema shared by both backends.
//!
//! Hand-written, not generated: it mirrors `migrations/sqlite/*/up.sql` and
//! `migrations/postgres/*/up.sql` and must change together with them (a new migration on both
//! backends, then the matching edit here). Only column types both backends share are used:
//! `Text` ids and JSON, `BigInt`, `Bool`, `Timestamp` (UTC `NaiveDateTime`), `Binary`.
//!
//! diesel is built without its `32-column-tables` feature, so a table may have at most 16
//! columns; `chats` is at that limit. Adding a column there needs that feature enabled on the
//! workspace `diesel` dependency first.

diesel::table! {
    users (id) {
        id -> Text,
        display_name -> Text,
        created_at -> Timestamp,
        last_active_at -> Timestamp,
        online -> Bool,
    }
}

diesel::table! {
    chats (id) {
        id -> Text,
        owner_id -> Text,
        title -> Text,
        agent_id -> Text,
        model -> Text,
        status -> Text,
        started_at -> Timestamp,
        ended_at -> Nullable<Timestamp>,
        last_activity_at -> Timestamp,
        needs_help -> Bool,
        admin_assisted -> Bool,
        operator_id -> Nullable<Text>,
        operator_name -> Nullable<Text>,
        operator_lease_until -> Nullable<Timestamp>,
        next_seq -> BigInt,
        message_count -> BigInt,
    }
}

diesel::table! {
    chat_members (chat_id, user_id) {
        chat_id -> Text,
        user_id -> Text,
        role -> Text,
        joined_at -> Timestamp,
    }
}

diesel::table! {
    messages (id) {
        id -> Text,
        chat_id -> Text,
        seq -> BigInt,
        sender_id -> Text,
        role -> Text,
        agent_id -> Text,
        content -> Text,
        status -> Text,
        client_message_id -> Nullable<Text>,
        attachments -> Text,
        metadata -> Text,
        created_at -> Timestamp,
        ordinal -> BigInt,
    }
}

diesel::table! {
    chat_events (chat_id, seq) {
        chat_id -> Text,
        seq -> BigInt,
        kind -> Text,
        payload -> Binary,
        created_at -> Timestamp,
    }
}

diesel::table! {
    read_receipts (message_id, user_id) {
        chat_id -> Text,
        message_id -> Text,
        user_id -> Text,
        read_at -> Timestamp,
    }
}

diesel::table! {
    token_usage (message_id) {
        message_id -> Text,
        chat_id -> Text,
        user_id -> Text,
        model -> Text,
        prompt_tokens -> BigInt,
        completion_tokens -> BigInt,
        estimated -> Bool,
        ttft_ms -> Nullable<BigInt>,
        total_ms -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    session_metrics (chat_id) {
        chat_id -> Text,
        user_messages -> BigInt,
        assistant_messages -> BigInt,
        admin_messages -> BigInt,
        timed_replies -> BigInt,
        ttft_total_ms -> BigInt,
        ttft_max_ms -> Nullable<BigInt>,
        response_total_ms -> BigInt,
        response_max_ms -> Nullable<BigInt>,
        prompt_tokens -> BigInt,
        completion_tokens -> BigInt,
        models -> Text,
        duration_ms -> BigInt,
    }
}

diesel::table! {
    help_requests (id) {
        id -> Text,
        chat_id -> Text,
        user_id -> Text,
        reason -> Nullable<Text>,
        created_at -> Timestamp,
        resolved_at -> Nullable<Timestamp>,
        resolved_by -> Nullable<Text>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        chat_id -> Text,
        action -> Text,
        actor_id -> Text,
        actor_name -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    pending_replies (trigger_id) {
        trigger_id -> Text,
        chat_id -> Text,
        requester_id -> Text,
        reply_id -> Nullable<Text>,
        model -> Nullable<Text>,
        partial -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        owner -> Text,
        chunks -> BigInt,
    }
}

diesel::table! {
    user_contexts (user_id) {
        user_id -> Text,
        document -> Text,
        updated_by -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    provider_conversations (chat_id, provider) {
        chat_id -> Text,
        provider -> Text,
        conversation_id -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    chat_keys (owner_id, client_key) {
        owner_id -> Text,
        client_key -> Text,
        chat_id -> Text,
    }
}

diesel::table! {
    files (id) {
        id -> Text,
        owner_id -> Text,
        name -> Text,
        mime -> Text,
        size -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    chat_settings (chat_id) {
        chat_id -> Text,
        spoken_replies -> Bool,
    }
}

diesel::table! {
    chat_files (chat_id, file_id) {
        chat_id -> Text,
        file_id -> Text,
    }
}

diesel::joinable!(chat_settings -> chats (chat_id));
diesel::joinable!(chat_files -> chats (chat_id));
diesel::joinable!(chat_files -> files (file_id));
diesel::joinable!(chat_members -> chats (chat_id));
diesel::joinable!(chat_keys -> chats (chat_id));
diesel::joinable!(provider_conversations -> chats (chat_id));
diesel::joinable!(pending_replies -> chats (chat_id));
diesel::joinable!(session_metrics -> chats (chat_id));
diesel::joinable!(help_requests -> chats (chat_id));
diesel::joinable!(audit_events -> chats (chat_id));
diesel::joinable!(messages -> chats (chat_id));
diesel::joinable!(chat_events -> chats (chat_id));
diesel::joinable!(read_receipts -> chats (chat_id));
diesel::joinable!(token_usage -> chats (chat_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    chats,
    chat_members,
    messages,
    chat_events,
    read_receipts,
    token_usage,
    session_metrics,
    help_requests,
    audit_events,
    pending_replies,
    user_contexts,
    provider_conversations,
    chat_keys,
    files,
    chat_settings,
    chat_files,
);
