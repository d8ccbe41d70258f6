use super::*;

#[test]
fn a_request_keeps_its_messages_and_options_across_protocols() {
    let openai = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5,
                        "max_tokens": 20, "stop": ["x"], "stream": true});
    let chat = read_chat(Protocol::OpenAi, Shape::Chat, &openai).unwrap();
    let ollama = write_chat(Protocol::Ollama, &chat).unwrap();
    assert_eq!(ollama["options"], json!({"temperature": 0.5, "num_predict": 20, "stop": ["x"]}));
    let back = write_chat(Protocol::OpenAi, &read_chat(Protocol::Ollama, Shape::Chat, &ollama).unwrap()).unwrap();
    for field in ["model", "messages", "temperature", "max_tokens", "stop", "stream"] {
        assert_eq!(back[field], openai[field], "and back: {field}");
    }
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
    let openai = write_chat(Protocol::OpenAi, &chat).unwrap();
    assert_eq!(openai["prompt"], "be brief\n\nfn main", "OpenAI has no system field: it goes first");
    assert_eq!((openai["max_tokens"].as_u64(), openai.get("messages")), (Some(9), None));
    assert_eq!(write_chat(Protocol::Ollama, &chat).unwrap()["system"], "be brief");
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
    let output = read_answer(Protocol::Ollama, Shape::Completion, &whole);
    assert_eq!((output.text.as_str(), output.reason.as_str()), ("done", "stop"));
    let out = write_answer(Protocol::OpenAi, Shape::Completion, "m", 0, &output);
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

/// A one-pixel PNG, as base64.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

#[test]
fn ollama_format_tools_images_and_options_reach_an_openai_server_or_are_refused_by_name() {
    let ollama = json!({
        "model": "m", "stream": false,
        "format": {"type": "object", "properties": {"city": {"type": "string"}}},
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "options": {"temperature": 0.2, "top_k": 20, "repeat_penalty": 1.1, "seed": 7, "num_predict": 50, "stop": ["END"]},
        "keep_alive": "5m",
        "messages": [
            {"role": "user", "content": "what is this?", "images": [PNG]},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Bern"}}}]},
            {"role": "tool", "content": "sunny", "tool_name": "weather"},
        ],
    });
    let chat = read_chat(Protocol::Ollama, Shape::Chat, &ollama).unwrap();
    let openai = write_chat(Protocol::OpenAi, &chat).unwrap();
    assert_eq!(openai["response_format"]["type"], "json_schema");
    assert_eq!(openai["response_format"]["json_schema"]["schema"], ollama["format"]);
    assert_eq!(openai["tools"], ollama["tools"]);
    assert_eq!((openai["temperature"].as_f64(), openai["top_k"].as_u64()), (Some(0.2), Some(20)));
    assert_eq!((openai["repetition_penalty"].as_f64(), openai["seed"].as_u64()), (Some(1.1), Some(7)));
    assert_eq!((openai["max_tokens"].as_u64(), &openai["stop"]), (Some(50), &json!(["END"])));
    let image = &openai["messages"][0]["content"][1];
    assert_eq!(image["image_url"]["url"], format!("data:image/png;base64,{PNG}"));
    let call = &openai["messages"][1]["tool_calls"][0];
    assert_eq!(
        (call["type"].as_str(), call["function"]["arguments"].as_str()),
        (Some("function"), Some(r#"{"city":"Bern"}"#))
    );
    assert_eq!(openai["messages"][2]["tool_call_id"], call["id"], "the tool's answer names its call");

    let json_mode = json!({"model": "m", "messages": [], "format": "json"});
    let openai = write_chat(Protocol::OpenAi, &read_chat(Protocol::Ollama, Shape::Chat, &json_mode).unwrap()).unwrap();
    assert_eq!(openai["response_format"], json!({"type": "json_object"}));

    // What OpenAI's protocol cannot say is refused by its name, never dropped.
    for (body, named) in [
        (json!({"model": "m", "messages": [], "options": {"num_ctx": 8192}}), "options.num_ctx"),
        (json!({"model": "m", "messages": [], "options": {"mirostat": 1}}), "options.mirostat"),
    ] {
        let chat = read_chat(Protocol::Ollama, Shape::Chat, &body).unwrap();
        let why = write_chat(Protocol::OpenAi, &chat).unwrap_err();
        assert!(why.contains(named), "{why}");
        assert_eq!(write_chat(Protocol::Ollama, &chat).unwrap()["options"], body["options"], "passed to Ollama as is");
    }
    let generate = json!({"model": "m", "prompt": "p", "images": [PNG]});
    let why = write_chat(Protocol::OpenAi, &read_chat(Protocol::Ollama, Shape::Completion, &generate).unwrap());
    assert!(why.unwrap_err().contains("`images`"));
    assert!(
        read_chat(Protocol::Ollama, Shape::Chat, &json!({"model": "m", "messages": [], "format": "yaml"})).is_err()
    );
}

#[test]
fn openai_images_tools_and_json_mode_reach_an_ollama_server() {
    let openai = json!({
        "model": "m",
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "weather"}}],
        "presence_penalty": 0.5,
        "messages": [
            {"role": "developer", "content": "be terse"},
            {"role": "user", "content": [{"type": "text", "text": "look: "},
                                         {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Bern\"}"}}]},
            {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
        ],
    });
    let ollama = write_chat(Protocol::Ollama, &read_chat(Protocol::OpenAi, Shape::Chat, &openai).unwrap()).unwrap();
    assert_eq!(ollama["format"], "json");
    assert_eq!(ollama["options"], json!({"presence_penalty": 0.5}));
    assert_eq!(ollama["messages"][0], json!({"role": "system", "content": "be terse"}));
    assert_eq!(ollama["messages"][1], json!({"role": "user", "content": "look: ", "images": [PNG]}));
    assert_eq!(ollama["messages"][2]["tool_calls"][0]["function"]["arguments"], json!({"city": "Bern"}));
    assert_eq!(ollama["messages"][3]["tool_name"], "weather");

    let by_url = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}}]}]});
    let chat = read_chat(Protocol::OpenAi, Shape::Chat, &by_url).unwrap();
    assert!(write_chat(Protocol::Ollama, &chat).unwrap_err().contains("data: URL"), "the appliance fetches nothing");
    let forced = json!({"model": "m", "messages": [], "tools": openai["tools"], "tool_choice": "required"});
    let chat = read_chat(Protocol::OpenAi, Shape::Chat, &forced).unwrap();
    assert!(write_chat(Protocol::Ollama, &chat).unwrap_err().contains("`tool_choice`"));
}

#[test]
fn tool_calls_come_back_in_the_clients_protocol_whole_or_streamed() {
    // An OpenAI server's whole answer, to an Ollama client.
    let whole = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
        "content": null, "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "weather", "arguments": "{\"city\":\"Bern\"}"}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3}});
    let output = read_answer(Protocol::OpenAi, Shape::Chat, &whole);
    let ollama = write_answer(Protocol::Ollama, Shape::Chat, "m", 0, &output);
    assert_eq!(
        ollama["message"]["tool_calls"],
        json!([{"function": {"name": "weather", "arguments": {"city": "Bern"}}}])
    );
    assert_eq!(ollama["done_reason"], "stop", "Ollama says stop");
    // An Ollama server's, to an OpenAI client.
    let output = read_answer(Protocol::Ollama, Shape::Chat, &ollama);
    let openai = write_answer(Protocol::OpenAi, Shape::Chat, "m", 0, &output);
    assert_eq!(openai["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(openai["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], r#"{"city":"Bern"}"#);

    // OpenAI streams a call in fragments; an Ollama client gets it whole.
    let mut reader = StreamReader::new(Shape::Chat);
    let mut writer = StreamWriter::new(Protocol::Ollama, Shape::Chat, "m", 0, false);
    let mut lines = Vec::new();
    for unit in [
        r#"{"choices":[{"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Bern\"}"}}]},"finish_reason":null}]}"#,
        r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
        "[DONE]",
    ] {
        for piece in reader.read(Protocol::OpenAi, unit) {
            lines.push(serde_json::from_slice::<Value>(&writer.write(&piece)).unwrap());
        }
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["message"]["tool_calls"][0]["function"]["arguments"], json!({"city": "Bern"}));
    assert_eq!((lines[1]["done"].as_bool(), lines[1]["done_reason"].as_str()), (Some(true), Some("stop")));

    // And Ollama's whole call in a line becomes OpenAI events.
    let mut reader = StreamReader::new(Shape::Chat);
    let mut writer = StreamWriter::new(Protocol::OpenAi, Shape::Chat, "m", 0, false);
    let mut text = Vec::new();
    for line in [
        r#"{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"weather","arguments":{"city":"Bern"}}}]},"done":false}"#,
        r#"{"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"}"#,
    ] {
        for piece in reader.read(Protocol::Ollama, line) {
            text.extend(writer.write(&piece));
        }
    }
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains(r#""tool_calls":[{"function":{"arguments":"{\"city\":\"Bern\"}","name":"weather"},"id":"call_0","index":0,"type":"function"}]"#), "{text}");
    assert!(text.contains(r#""finish_reason":"tool_calls""#), "{text}");
}

#[test]
fn embeddings_are_written_as_the_client_asked_and_the_upstream_always_asked_for_floats() {
    let body = json!({"model": "e", "input": ["a b"], "encoding_format": "base64", "dimensions": 2, "user": "u"});
    let embed = read_embed(Protocol::OpenAi, false, &body).unwrap();
    assert_eq!((embed.encoding, embed.dimensions), (Encoding::Base64, Some(2)));
    let to_vllm = write_embed(Protocol::OpenAi, &embed).unwrap();
    assert_eq!((to_vllm["encoding_format"].as_str(), to_vllm["user"].as_str()), (Some("float"), Some("u")));
    assert_eq!(
        write_embed(Protocol::Ollama, &embed).unwrap(),
        json!({"model": "e", "input": ["a b"], "dimensions": 2})
    );
    let out = write_vectors(&embed, vec![vec![1.5, -0.25]], 2);
    let b64 = out["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
    let floats: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(floats, [1.5, -0.25]);
    let floats = read_embed(Protocol::OpenAi, false, &json!({"model": "e", "input": "x"})).unwrap();
    assert_eq!(write_vectors(&floats, vec![vec![1.5]], 1)["data"][0]["embedding"], json!([1.5]));
    for bad in [
        json!({"model": "e", "input": "x", "encoding_format": "binary"}),
        json!({"model": "e", "input": [1, 2]}),
        json!({"model": "e", "input": "x", "dimensions": 0}),
    ] {
        assert!(read_embed(Protocol::OpenAi, false, &bad).is_err(), "{bad}");
    }
    // Ollama's older route: one prompt, one vector.
    let one = read_embed(Protocol::Ollama, true, &json!({"model": "e", "prompt": "hi", "options": {"num_ctx": 512}}))
        .unwrap();
    assert_eq!(
        write_embed(Protocol::Ollama, &one).unwrap(),
        json!({"model": "e", "input": ["hi"], "options": {"num_ctx": 512}})
    );
    assert!(write_embed(Protocol::OpenAi, &one).unwrap_err().contains("options.num_ctx"));
    assert_eq!(write_vectors(&one, vec![vec![0.5]], 1), json!({"embedding": [0.5]}));
}
