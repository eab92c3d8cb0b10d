//! Reads the event it is sent with the SDK, and replies (200) with an event
//! of type `com.example.mirrored` whose JSON data says what it received:
//! the attributes as decoded, the data as text, and the raw `ce-*` and
//! `Content-Type` headers. A request that is no event gets 400.

use serde_json::json;
use shoal::{Event, Request, Response};

fn handle(request: Request) -> Response {
    let headers: Vec<(String, String)> = request
        .headers()
        .filter(|(name, _)| name.starts_with("ce-") || *name == "content-type")
        .map(|(name, value)| (name.to_owned(), String::from_utf8_lossy(value).into_owned()))
        .collect();
    let event = match request.event() {
        Ok(event) => event,
        Err(error) => return Response::error(400, error),
    };
    let seen = json!({
        "id": event.id(),
        "source": event.source(),
        "type": event.ty(),
        "subject": event.subject(),
        "time": event.time(),
        "datacontenttype": event.data_content_type(),
        "extensions": event.extensions().collect::<std::collections::BTreeMap<_, _>>(),
        "data": String::from_utf8_lossy(event.data()),
        "headers": headers,
    });
    let id = format!("{}/mirrored", event.id());
    match Event::new(id, "/shoal/tests/mirror", "com.example.mirrored").with_json(&seen) {
        Ok(reply) => Response::event(reply),
        Err(error) => Response::error(500, error),
    }
}

shoal::export!(handle);
