//! Files end to end: multipart uploads through the edge into the core's store, type checks by
//! content, signed downloads (expiry, forgery, another file's id, ranges), and attachments on
//! messages (ownership, rendering with fresh signed URLs in live messages and history).

use chat_core::files::sign::UrlSigner;
use chat_tests::{SECRET, Stack, StackOptions, spawn_default, spawn_stack};
use serde_json::{Value, json};

use chat_tests::PNG_1X1 as PNG;
/// An x86-64 ELF executable's header (64 bytes; a real program goes on).
fn elf() -> Vec<u8> {
    let mut elf =
        b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0\x01\0\0\0\x78\x00\x40\0\0\0\0\0".to_vec();
    elf.resize(64, 0);
    elf
}

/// A WebM (Matroska) header with the `webm` doc type, padded as a recording goes on.
fn webm() -> Vec<u8> {
    let mut webm = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm".to_vec();
    webm.resize(512, 0);
    webm
}

/// One file of every allowed type: (name, declared type, bytes, shown inline).
fn allowed() -> Vec<(&'static str, &'static str, Vec<u8>, bool)> {
    let mut wav = b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x40\x1f\0\0\x80\x3e\0\0\x02\0\x10\0data\0\0\0\0".to_vec();
    wav.extend_from_slice(&[0; 16]);
    vec![
        ("dot.png", "image/png", PNG.to_vec(), true),
        (
            "photo.jpg",
            "image/jpeg",
            b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0\xff\xd9".to_vec(),
            true,
        ),
        (
            "anim.gif",
            "image/gif",
            b"GIF89a\x01\0\x01\0\0\0\0;".to_vec(),
            true,
        ),
        (
            "pic.webp",
            "image/webp",
            b"RIFF\x1a\0\0\0WEBPVP8L\x0d\0\0\0\x2f\0\0\0\x10\x07\x10\x11\x11\x88\x88\xfe\x07\0"
                .to_vec(),
            true,
        ),
        (
            "paper.pdf",
            "application/pdf",
            b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
                .to_vec(),
            true,
        ),
        (
            "song.mp3",
            "audio/mpeg",
            b"ID3\x04\0\0\0\0\0\0\xff\xfb\x90\x64\0\0\0\0".to_vec(),
            true,
        ),
        ("voice.wav", "audio/wav", wav, true),
        (
            "voice.ogg",
            "audio/ogg",
            b"OggS\0\x02\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\x01\x13OpusHead".to_vec(),
            true,
        ),
        ("memo.webm", "audio/webm", webm(), true),
        (
            "take.flac",
            "audio/flac",
            b"fLaC\0\0\0\x22\x10\0\x10\0\0\0\0\0\0\0".to_vec(),
            true,
        ),
        (
            "notes.txt",
            "text/plain",
            "plain notes, with ünïcode\n".as_bytes().to_vec(),
            false,
        ),
        (
            "readme.md",
            "text/markdown",
            b"# Title\n\n- item\n".to_vec(),
            false,
        ),
        ("table.csv", "text/csv", b"a,b\n1,2\n".to_vec(), false),
        (
            "data.json",
            "application/json",
            br#"{"a": [1, 2]}"#.to_vec(),
            false,
        ),
    ]
}

async fn file_rows(stack: &Stack) -> usize {
    let mut n = 0;
    for id in stored_ids(stack) {
        if chat_core::storage::get_file(&stack.db, &id)
            .await
            .expect("query")
            .is_some()
        {
            n += 1;
        }
    }
    n
}

/// The objects in the stack's local store (named by file id).
fn stored_ids(stack: &Stack) -> Vec<String> {
    let dir = stack.files_dir();
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_allowed_type_uploads_and_downloads_as_itself() {
    let stack = spawn_default().await;
    for (name, mime, bytes, inline) in allowed() {
        let (status, file) = stack.upload("alice", name, mime, bytes.clone()).await;
        assert_eq!(status, 201, "{name}: {file}");
        assert_eq!(file["name"], name);
        assert_eq!(file["mime"], mime);
        assert_eq!(file["size"], bytes.len());
        let url = file["url"].as_str().expect("url");
        assert!(url.starts_with(&format!("/files/{}?exp=", file["id"].as_str().expect("id"))));
        let got = reqwest::get(stack.http_url(url)).await.expect("download");
        assert_eq!(got.status(), 200, "{name}");
        let h = got.headers().clone();
        assert!(
            h["content-type"]
                .to_str()
                .unwrap_or_default()
                .starts_with(mime),
            "{name}: {h:?}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["accept-ranges"], "bytes");
        let disposition = h["content-disposition"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            disposition.starts_with("inline"),
            inline,
            "{name}: {disposition}"
        );
        assert_eq!(got.bytes().await.expect("body").to_vec(), bytes, "{name}");
    }
    assert_eq!(file_rows(&stack).await, allowed().len());
}

#[tokio::test]
async fn dangerous_or_mislabelled_files_are_refused_and_nothing_is_stored() {
    let stack = spawn_stack(StackOptions::default().core(|c| c.files.max_bytes = 64 * 1024)).await;
    // A PNG whose markup only shows after the first 8 KiB: found while streaming.
    let mut polyglot = PNG.to_vec();
    polyglot.extend(std::iter::repeat_n(0u8, 20_000));
    polyglot.extend_from_slice(b"<html><script>alert(document.cookie)</script></html>");
    let mut big = PNG.to_vec();
    big.extend(std::iter::repeat_n(7u8, 100 * 1024));
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("cat.png", "image/png", elf(), 400, "not accepted"),
        (
            "setup.exe",
            "application/octet-stream",
            b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0\xb8\0\0\0".to_vec(),
            400,
            "not accepted",
        ),
        ("image.png", "image/png", polyglot, 400, "markup or script"),
        (
            "logo.svg",
            "image/svg+xml",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>".to_vec(),
            400,
            "SVG",
        ),
        (
            "page.txt",
            "text/plain",
            b"<!doctype html><html><body>hi</body></html>".to_vec(),
            400,
            "text/html",
        ),
        ("huge.png", "image/png", big, 413, "larger than"),
        (
            "../../etc/passwd",
            "text/plain",
            b"root:x:0:0\n".to_vec(),
            400,
            "path",
        ),
        (
            "photo.jpg",
            "image/jpeg",
            PNG.to_vec(),
            400,
            "declared as image/jpeg",
        ),
        ("empty.txt", "text/plain", Vec::new(), 400, "empty"),
    ];
    for (name, mime, bytes, code, says) in cases {
        let (status, body) = stack.upload("alice", name, mime, bytes).await;
        assert_eq!(status, code, "{name}: {body}");
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{name}: {message}");
    }
    // Over the edge's own request limit: refused before the core sees it all.
    let stack_small =
        spawn_stack(StackOptions::default().edge(|e| e.limits.max_upload_bytes = 16 * 1024)).await;
    let mut big = PNG.to_vec();
    big.extend(std::iter::repeat_n(1u8, 64 * 1024));
    let (status, body) = stack_small
        .upload("alice", "big.png", "image/png", big)
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(stored_ids(&stack).is_empty(), "{:?}", stored_ids(&stack));
    assert!(stored_ids(&stack_small).is_empty());
    // Without a token: 401.
    let response = reqwest::Client::new()
        .post(stack.http_url("/api/uploads"))
        .multipart(
            reqwest::multipart::Form::new()
                .part("file", reqwest::multipart::Part::bytes(PNG.to_vec())),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
}

fn query_of(url: &str) -> (String, i64, String) {
    let (path, query) = url.split_once('?').expect("query");
    let id = path.trim_start_matches("/files/").to_owned();
    let mut exp = 0;
    let mut sig = String::new();
    for pair in query.split('&') {
        match pair.split_once('=').expect("pair") {
            ("exp", v) => exp = v.parse().expect("exp"),
            ("sig", v) => sig = v.to_owned(),
            _ => {}
        }
    }
    (id, exp, sig)
}

#[tokio::test]
async fn signed_urls_expire_cannot_be_forged_or_moved_and_serve_ranges() {
    let stack = spawn_default().await;
    let (_, a) = stack
        .upload("alice", "a.txt", "text/plain", b"0123456789abcdef".to_vec())
        .await;
    let (_, b) = stack
        .upload("alice", "b.txt", "text/plain", b"another file".to_vec())
        .await;
    let url = a["url"].as_str().expect("url");
    let (id, exp, sig) = query_of(url);
    let status = |u: String| async move { reqwest::get(u).await.expect("get").status().as_u16() };

    assert_eq!(status(stack.http_url(url)).await, 200);
    // The signature of a's URL on b's id, a stretched expiry, a changed signature, none.
    let b_id = b["id"].as_str().expect("id");
    assert_eq!(
        status(stack.http_url(&format!("/files/{b_id}?exp={exp}&sig={sig}"))).await,
        404
    );
    assert_eq!(
        status(stack.http_url(&format!("/files/{id}?exp={}&sig={sig}", exp + 86_400))).await,
        404
    );
    let mut forged = sig.clone().into_bytes();
    forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    assert_eq!(
        status(stack.http_url(&format!("/files/{id}?exp={exp}&sig={forged}"))).await,
        404
    );
    assert_eq!(status(stack.http_url(&format!("/files/{id}"))).await, 404);
    // Correctly signed but expired (the key is derived from the JWT secret, as the core does).
    let signer = UrlSigner::derived(SECRET.as_bytes(), 60);
    let expired = signer.url(&id, chrono::Utc::now().timestamp() - 3600);
    assert_eq!(status(stack.http_url(&expired)).await, 404);
    let fresh = signer.url(&id, chrono::Utc::now().timestamp());
    assert_eq!(
        status(stack.http_url(&fresh)).await,
        200,
        "the same key signs"
    );

    // Ranges, for audio players: 206 with Content-Range; past the end: 416.
    let ranged = reqwest::Client::new()
        .get(stack.http_url(url))
        .header("range", "bytes=4-9")
        .send()
        .await
        .expect("range");
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.headers()["content-range"], "bytes 4-9/16");
    assert_eq!(ranged.bytes().await.expect("body").as_ref(), b"456789");
    let open = reqwest::Client::new()
        .get(stack.http_url(url))
        .header("range", "bytes=10-")
        .send()
        .await
        .expect("range");
    assert_eq!(open.status(), 206);
    assert_eq!(open.bytes().await.expect("body").as_ref(), b"abcdef");
    let past = reqwest::Client::new()
        .get(stack.http_url(url))
        .header("range", "bytes=100-200")
        .send()
        .await
        .expect("range");
    assert_eq!(past.status(), 416);
}

#[tokio::test]
async fn attachments_are_checked_for_ownership_and_rendered_with_fresh_urls() {
    let stack = spawn_default().await;
    let (_, file) = stack
        .upload("alice", "dot.png", "image/png", PNG.to_vec())
        .await;
    let file_id = file["id"].as_str().expect("id").to_owned();

    // Bob cannot attach alice's file; nobody can attach a file that does not exist.
    let (mut bob, _) = stack.connect("bob").await;
    bob.send(json!({"type": "message", "data": {"content": "look", "messageId": "b-1", "attachments": [file_id]}}))
        .await;
    let refused = bob.recv_type("error").await;
    assert_eq!(refused["data"]["code"], 403, "{refused}");
    bob.send(json!({"type": "message", "data": {"content": "look", "messageId": "b-2", "attachments": ["no-such-file"]}}))
        .await;
    assert_eq!(bob.recv_type("error").await["data"]["code"], 404);
    assert!(
        chat_core::storage::list_user_chats(&stack.db, "bob", 10)
            .await
            .expect("chats")
            .is_empty(),
        "nothing stored for the refused messages"
    );

    let (mut alice, _) = stack.connect("alice").await;
    alice
        .send(json!({"type": "message", "data": {"content": "what is this?", "messageId": "a-1", "attachments": [file_id]}}))
        .await;
    let chat = alice.recv_type("ack").await["data"]["chatId"]
        .as_str()
        .expect("chat")
        .to_owned();
    let message = alice.recv_type("message").await;
    let attachment = &message["data"]["message"]["attachments"][0];
    assert_eq!(attachment["id"], file_id.as_str());
    assert_eq!(attachment["name"], "dot.png");
    assert_eq!(attachment["mime"], "image/png");
    assert_eq!(attachment["size"], PNG.len());
    let live_url = attachment["url"].as_str().expect("url").to_owned();
    let got = reqwest::get(stack.http_url(&live_url))
        .await
        .expect("download");
    assert_eq!(got.bytes().await.expect("bytes").as_ref(), PNG);
    alice.recv_reply().await;

    // History signs again (a URL of its own, for the same file).
    alice
        .send(json!({"type": "history", "data": {"chatId": chat}}))
        .await;
    let history = alice.recv_type("history").await;
    let again = &history["data"]["messages"][0]["attachments"][0];
    assert_eq!(again["id"], file_id.as_str());
    let url = again["url"].as_str().expect("url");
    assert_eq!(
        reqwest::get(stack.http_url(url))
            .await
            .expect("get")
            .status(),
        200
    );
    // And REST history too.
    let rest: Value = reqwest::Client::new()
        .get(stack.http_url(&format!("/api/sessions/{chat}/messages")))
        .bearer_auth(stack.token("alice", &[]))
        .send()
        .await
        .expect("rest")
        .json()
        .await
        .expect("json");
    assert!(
        rest["messages"][0]["attachments"][0]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("/files/"))
    );
}

/// Sends one message with a PNG and a text file, and returns the body the fake model got.
async fn prompt_with_files(stack: &Stack) -> Value {
    let (_, image) = stack
        .upload("alice", "dot.png", "image/png", PNG.to_vec())
        .await;
    let (_, text) = stack
        .upload("alice", "notes.txt", "text/plain", b"hello notes".to_vec())
        .await;
    let (mut ws, _) = stack.connect("alice").await;
    ws.send(json!({"type": "message", "data": {
        "content": "What do you see?",
        "messageId": "v-1",
        "attachments": [image["id"], text["id"]],
    }}))
    .await;
    ws.recv_type("ack").await;
    ws.recv_reply().await;
    let fake = stack.fake.as_ref().expect("a fake model");
    fake.requests().last().cloned().expect("a request")
}

/// The last message of an upstream request body (the one being answered).
fn last_message(body: &Value) -> &Value {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .expect("messages")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn an_image_reaches_a_vision_model_as_an_image_part_in_both_wire_formats() {
    use chat_tests::Llm;
    use chat_tests::fake_llm::FakeScript;
    let vision = |id: &'static str| {
        move |c: &mut chat_core::Settings| {
            for model in c.llm.models.iter_mut().filter(|m| m.id == id) {
                model.vision = true;
            }
        }
    };

    // OpenAI: the user's content becomes parts, the image a data URL.
    let stack = spawn_stack(
        StackOptions::default()
            .llm(Llm::OpenAi(FakeScript::reply(&["A ", "dot."])))
            .core(vision("fake-openai")),
    )
    .await;
    let body = prompt_with_files(&stack).await;
    let last = last_message(&body);
    let parts = last["content"].as_array().expect("content parts");
    assert_eq!(parts[0]["type"], "text");
    let text = parts[0]["text"].as_str().expect("text");
    assert!(text.starts_with("What do you see?"), "{text}");
    assert!(
        text.contains("[Attached file: dot.png (image/png,"),
        "{text}"
    );
    assert!(
        text.contains("[Content of notes.txt]\nhello notes"),
        "{text}"
    );
    assert_eq!(parts[1]["type"], "image_url");
    assert_eq!(
        parts[1]["image_url"]["url"],
        format!("data:image/png;base64,{}", b64(PNG))
    );

    // Anthropic: an image block with the base64 source, then the text.
    let stack = spawn_stack(
        StackOptions::default()
            .llm(Llm::Anthropic(FakeScript::reply(&["A ", "dot."])))
            .core(vision("fake-anthropic")),
    )
    .await;
    let body = prompt_with_files(&stack).await;
    let last = last_message(&body);
    let blocks = last["content"].as_array().expect("content blocks");
    assert_eq!(
        blocks[0],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)}})
    );
    assert_eq!(blocks[1]["type"], "text");

    // A model without vision gets the text only, the image named.
    let stack =
        spawn_stack(StackOptions::default().llm(Llm::OpenAi(FakeScript::reply(&["No ", "eyes."]))))
            .await;
    let body = prompt_with_files(&stack).await;
    let last = last_message(&body);
    let content = last["content"].as_str().expect("plain text content");
    assert!(content.contains("[Attached file: dot.png"), "{content}");
    assert!(content.contains("hello notes"), "{content}");
}

#[tokio::test]
async fn uploads_are_scanned_by_clamd_and_a_scanner_outage_is_a_clear_503() {
    use chat_tests::clamd::{EICAR, FakeClamd};
    let clamd = FakeClamd::start().await;
    let addr = clamd.addr.to_string();
    let stack =
        spawn_stack(StackOptions::default().core(move |c| c.files.clamd_addr = Some(addr))).await;
    let (status, clean) = stack
        .upload("alice", "notes.txt", "text/plain", b"clean notes".to_vec())
        .await;
    assert_eq!(status, 201, "{clean}");
    let (status, infected) = stack
        .upload(
            "alice",
            "eicar.txt",
            "text/plain",
            EICAR.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{infected}");
    let message = infected["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("virus scanner (Eicar-Test-Signature)"),
        "{message}"
    );
    assert_eq!(clamd.scans(), 2, "both were scanned to the end");
    assert_eq!(
        stored_ids(&stack),
        vec![clean["id"].as_str().expect("id").to_owned()]
    );

    // A scanner that cannot be reached: 503, never a silent pass, nothing stored.
    let closed = format!("127.0.0.1:{}", chat_tests::free_port());
    let down =
        spawn_stack(StackOptions::default().core(move |c| c.files.clamd_addr = Some(closed))).await;
    let (status, body) = down
        .upload("alice", "notes.txt", "text/plain", b"clean notes".to_vec())
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("virus scanner is unavailable"),
        "{body}"
    );
    assert!(stored_ids(&down).is_empty());
}

/// moto's XML listing of the test bucket.
async fn bucket_listing(moto: &chat_tests::moto::Moto) -> String {
    reqwest::get(format!("{}/chat-files", moto.url))
        .await
        .expect("list")
        .text()
        .await
        .expect("xml")
}

#[tokio::test]
async fn the_s3_store_keeps_uploads_in_a_real_s3_compatible_server() {
    use chat_core::files::StoreKind;
    let moto = chat_tests::moto::Moto::start("chat-files").await;
    let endpoint = moto.url.clone();
    let stack = spawn_stack(StackOptions::default().core(move |c| {
        c.files.store = StoreKind::S3;
        c.files.s3.bucket = "chat-files".into();
        c.files.s3.endpoint = Some(endpoint);
        c.files.s3.allow_http = true;
        c.files.s3.access_key_id = Some("testing".to_owned().into());
        c.files.s3.secret_access_key = Some("testing".to_owned().into());
    }))
    .await;
    let mut big = PNG.to_vec();
    // Past object_store's 5 MiB part size: a real multipart upload.
    big.extend(std::iter::repeat_n(9u8, 6 * 1024 * 1024));
    let (status, file) = stack
        .upload("alice", "big.png", "image/png", big.clone())
        .await;
    assert_eq!(status, 201, "{file}");
    assert!(stored_ids(&stack).is_empty(), "nothing on the local disk");
    let url = file["url"].as_str().expect("url");
    let got = reqwest::get(stack.http_url(url)).await.expect("download");
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.expect("bytes").len(), big.len());
    // The object is in the bucket, under the file's id.
    let listing = reqwest::get(format!("{}/chat-files", moto.url))
        .await
        .expect("list")
        .text()
        .await
        .expect("xml");
    assert!(
        listing.contains(file["id"].as_str().expect("id")),
        "{listing}"
    );
    let ranged = reqwest::Client::new()
        .get(stack.http_url(url))
        .header("range", "bytes=0-7")
        .send()
        .await
        .expect("range");
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.expect("bytes").as_ref(), &PNG[..8]);
    // A refused upload leaves no object behind (the multipart upload is aborted).
    let mut polyglot = PNG.to_vec();
    polyglot.extend(std::iter::repeat_n(0u8, 20_000));
    polyglot.extend_from_slice(b"<script>alert(1)</script>");
    let (status, _) = stack.upload("alice", "x.png", "image/png", polyglot).await;
    assert_eq!(status, 400);
    let listing = bucket_listing(&moto).await;
    assert_eq!(listing.matches("<Key>").count(), 1, "{listing}");
}

#[tokio::test]
async fn uploads_are_rate_limited_per_user() {
    let stack = spawn_stack(StackOptions::default().core(|c| c.chat.uploads_per_minute = 2)).await;
    for i in 0..2 {
        let (status, body) = stack
            .upload(
                "alice",
                &format!("n{i}.txt"),
                "text/plain",
                b"notes".to_vec(),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = stack
        .upload("alice", "n3.txt", "text/plain", b"notes".to_vec())
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], 429);
    // Another user has a budget of their own.
    let (status, _) = stack
        .upload("bob", "b.txt", "text/plain", b"notes".to_vec())
        .await;
    assert_eq!(status, 201);
    assert_eq!(stored_ids(&stack).len(), 3);
}

/// Sends a message attaching `files` and waits for its reply; the chat id and the URL of
/// each attachment, as the message frame showed them.
async fn attach(
    ws: &mut chat_tests::Ws,
    chat: Option<&str>,
    files: &[&Value],
    id: &str,
) -> (String, Vec<String>) {
    ws.send(json!({"type": "message", "data": {
        "chatId": chat, "content": "see attached", "messageId": id,
        "attachments": files.iter().map(|f| f["id"].clone()).collect::<Vec<_>>(),
    }}))
    .await;
    let ack = ws.recv_type("ack").await;
    let mine = ws.recv_type("message").await;
    ws.recv_reply().await;
    let urls = mine["data"]["message"]["attachments"]
        .as_array()
        .expect("attachments")
        .iter()
        .map(|a| a["url"].as_str().expect("url").to_owned())
        .collect();
    (
        ack["data"]["chatId"].as_str().expect("chat").to_owned(),
        urls,
    )
}

async fn status_of(stack: &Stack, url: &str) -> u16 {
    reqwest::get(stack.http_url(url))
        .await
        .expect("download")
        .status()
        .as_u16()
}

#[tokio::test]
async fn deleting_a_session_or_a_file_makes_their_urls_answer_404() {
    let stack = spawn_default().await;
    let (_, shared) = stack
        .upload("alice", "dot.png", "image/png", PNG.to_vec())
        .await;
    let (_, own) = stack
        .upload("alice", "notes.txt", "text/plain", b"only here".to_vec())
        .await;
    let (mut ws, _) = stack.connect("alice").await;
    let (first, urls) = attach(&mut ws, None, &[&shared, &own], "d-1").await;
    let (second, later) = attach(&mut ws, None, &[&shared], "d-2").await;
    assert_ne!(first, second);
    let (shared_url, own_url) = (urls[0].clone(), urls[1].clone());
    assert_eq!(status_of(&stack, &own_url).await, 200);

    let admin = stack.token("root", &["admin"]);
    let user = stack.token("alice", &[]);
    let refused = chat_tests::run_chatctl(
        stack.chatctl(Some(&user)),
        &["sessions", "delete", &first],
        None,
    )
    .await;
    assert_eq!(refused.code, Some(5), "{refused:?}");
    let deleted = chat_tests::run_chatctl(
        stack.chatctl(Some(&admin)),
        &["--json", "sessions", "delete", &first],
        None,
    )
    .await;
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    assert_eq!(deleted.json(), json!({"deleted": first, "filesDeleted": 1}));
    // The file only that session held is gone, bytes and all; the shared one stays.
    assert_eq!(status_of(&stack, &own_url).await, 404);
    assert_eq!(status_of(&stack, &shared_url).await, 200);
    assert_eq!(status_of(&stack, &later[0]).await, 200);
    assert!(!stored_ids(&stack).contains(&own["id"].as_str().expect("id").to_owned()));
    assert_eq!(
        chat_core::storage::get_chat(&stack.db, &first)
            .await
            .expect("query"),
        None
    );
    ws.send(json!({"type": "chat_update", "data": {"action": "join", "chatId": first}}))
        .await;
    assert_eq!(ws.recv_type("error").await["data"]["code"], 404);
    let again = chat_tests::run_chatctl(
        stack.chatctl(Some(&admin)),
        &["sessions", "delete", &first],
        None,
    )
    .await;
    assert_eq!(again.code, Some(7), "{again:?}");

    // An admin deletes the shared file: every URL of it answers 404, the message keeps its name.
    let shared_id = shared["id"].as_str().expect("id");
    let gone = chat_tests::run_chatctl(
        stack.chatctl(Some(&admin)),
        &["files", "delete", shared_id],
        None,
    )
    .await;
    assert_eq!(gone.code, Some(0), "{gone:?}");
    assert_eq!(gone.stdout.trim(), format!("deleted file {shared_id}"));
    assert_eq!(status_of(&stack, &later[0]).await, 404);
    assert!(stored_ids(&stack).is_empty(), "{:?}", stored_ids(&stack));
    ws.send(json!({"type": "history", "data": {"chatId": second}}))
        .await;
    let history = ws.recv_type("history").await;
    assert_eq!(
        history["data"]["messages"][0]["attachments"][0]["name"],
        "dot.png"
    );
    let twice = chat_tests::run_chatctl(
        stack.chatctl(Some(&admin)),
        &["files", "delete", shared_id],
        None,
    )
    .await;
    assert_eq!(twice.code, Some(7), "{twice:?}");
}
