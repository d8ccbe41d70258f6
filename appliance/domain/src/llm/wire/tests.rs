use super::*;

#[test]
fn a_request_keeps_its_messages_and_options_across_protocols() {
    let openai = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5,
                        "max_tokens": 20, "stop": ["x"], "stream": true});
    let chat = read_chat(Protocol::OpenAi, Shape::Chat, &openai).unwrap();
    let ollama = write_chat(Protocol::Ollama, &chat);
    assert_eq!(ollama["options"], json!({"temperature": 0.5, "num_predict": 20, "stop": ["x"]}));
    assert_eq!(read_chat(Protocol::Ollama, Shape::Chat, &ollama).unwrap(), chat, "and back");
    assert!(
        read_chat(Protocol::Ollama, Shape::Chat, &json!({"model": "m", "messages": []})).unwrap().stream,
        "Ollama streams by default"
    );
    assert!(read_chat(Protocol::OpenAi, Shape::Chat, &json!({"messages": []})).is_err());
}

#[test]
fn an_ollama_stream_becomes_openai_events_ending_with_usage_and_done() {
    let mut reader = StreamReader::new(Shape::Chat);
    let mut writer = StreamWriter::new(Protocol::OpenAi, Shape::Chat, "m", 0, true);
    let mut out = Vec::new();
    for line in [
        r#"{"message":{"role":"assistant","content":"he"},"done":false}"#,
        r#"{"message":{"role":"assistant","content":"llo"},"done":false}"#,
        r#"{"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":7,"eval_count":2}"#,
    ] {
        for piece in reader.read(Protocol::Ollama, line) {
            out.extend(writer.write(&piece));
        }
    }
    let text = String::from_utf8(out).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 6, "role, two texts, finish, usage, [DONE]: {text}");
    assert!(events[1].contains("\"content\":\"he\"") && events[2].contains("\"content\":\"llo\""));
    assert!(events[4].contains("\"prompt_tokens\":7") && events[4].contains("\"completion_tokens\":2"));
    assert_eq!(events[5], "data: [DONE]");
}

#[test]
fn an_openai_stream_becomes_ollama_lines_whose_last_carries_the_counts() {
    let mut reader = StreamReader::new(Shape::Chat);
    let mut writer = StreamWriter::new(Protocol::Ollama, Shape::Chat, "m", 0, false);
    let mut lines = Vec::new();
    for unit in [
        r#"{"choices":[{"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}"#,
        r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
        "[DONE]",
    ] {
        for piece in reader.read(Protocol::OpenAi, unit) {
            lines.push(serde_json::from_slice::<Value>(&writer.write(&piece)).unwrap());
        }
    }
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["message"]["content"].as_str(), lines[0]["done"].as_bool()), (Some("hi"), Some(false)));
    assert_eq!(lines[1]["done_reason"], "length");
    assert_eq!((lines[1]["prompt_eval_count"].as_u64(), lines[1]["eval_count"].as_u64()), (Some(3), Some(1)));
}

#[test]
fn a_completion_crosses_protocols_with_its_system_text_and_its_stream() {
    let generate = json!({"model": "m", "prompt": "fn main", "system": "be brief", "options": {"num_predict": 9}});
    let chat = read_chat(Protocol::Ollama, Shape::Completion, &generate).unwrap();
    assert!(chat.stream && chat.messages.is_empty());
    let openai = write_chat(Protocol::OpenAi, &chat);
    assert_eq!(openai["prompt"], "be brief\n\nfn main", "OpenAI has no system field: it goes first");
    assert_eq!((openai["max_tokens"].as_u64(), openai.get("messages")), (Some(9), None));
    assert_eq!(write_chat(Protocol::Ollama, &chat)["system"], "be brief");
    let two = json!({"model": "m", "prompt": ["a", "b"]});
    assert!(read_chat(Protocol::OpenAi, Shape::Completion, &two).is_err(), "one prompt per request");

    // vLLM's completion events become generate's lines.
    let mut reader = StreamReader::new(Shape::Completion);
    let mut writer = StreamWriter::new(Protocol::Ollama, Shape::Completion, "m", 0, false);
    let mut lines = Vec::new();
    for unit in [
        r#"{"object":"text_completion","choices":[{"index":0,"text":"() {","finish_reason":null}]}"#,
        r#"{"object":"text_completion","choices":[{"index":0,"text":"","finish_reason":"length"}]}"#,
        r#"{"object":"text_completion","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}"#,
        "[DONE]",
    ] {
        for piece in reader.read(Protocol::OpenAi, unit) {
            lines.push(serde_json::from_slice::<Value>(&writer.write(&piece)).unwrap());
        }
    }
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["response"].as_str(), lines[0]["done"].as_bool()), (Some("() {"), Some(false)));
    assert_eq!((lines[1]["done_reason"].as_str(), lines[1]["eval_count"].as_u64()), (Some("length"), Some(2)));

    // And generate's answer becomes a text completion.
    let whole =
        json!({"response": "done", "done": true, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 1});
    let pieces = read_answer(Protocol::Ollama, Shape::Completion, &whole);
    assert_eq!(pieces[0], Piece::Text("done".into()));
    let usage = usage_of(Protocol::Ollama, &whole).unwrap();
    let out = write_answer(Protocol::OpenAi, Shape::Completion, "m", 0, "done", "stop", usage);
    assert_eq!((out["object"].as_str(), out["choices"][0]["text"].as_str()), (Some("text_completion"), Some("done")));
    assert_eq!(out["usage"]["total_tokens"], 4);
    let mut writer = StreamWriter::new(Protocol::OpenAi, Shape::Completion, "m", 0, true);
    let events = String::from_utf8(writer.write(&Piece::Text("x".into()))).unwrap();
    assert!(events.starts_with("data: ") && events.contains("\"text\":\"x\"") && !events.contains("delta"), "{events}");
}

#[test]
fn a_requested_maximum_is_a_whole_number_in_range_or_refused() {
    let openai = |v: Value| requested_max_tokens(Protocol::OpenAi, &json!({ "max_tokens": v }));
    let ollama = |v: Value| requested_max_tokens(Protocol::Ollama, &json!({ "options": { "num_predict": v } }));
    assert_eq!(openai(json!(256)), Ok(Some(256)));
    assert_eq!(openai(Value::Null), Ok(None));
    assert_eq!(requested_max_tokens(Protocol::OpenAi, &json!({})), Ok(None));
    for bad in [json!(1e12), json!(9_223_372_036_854_775_808u64), json!(-1), json!(0), json!(2.5), json!("9")] {
        assert!(openai(bad.clone()).unwrap_err().contains("`max_tokens` must be"), "{bad}");
        if bad != json!(-1) {
            assert!(ollama(bad.clone()).is_err(), "{bad}");
        }
    }
    assert_eq!(ollama(json!(-1)), Ok(None), "Ollama's own \"no limit\"");
    assert_eq!(ollama(json!(64)), Ok(Some(64)));
    let newer = json!({"max_completion_tokens": 1e12, "max_tokens": 5});
    assert!(requested_max_tokens(Protocol::OpenAi, &newer).unwrap_err().contains("max_completion_tokens"));
}
