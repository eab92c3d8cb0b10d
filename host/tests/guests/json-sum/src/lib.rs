//! `POST {"numbers": [..]}` answers `{"sum": N, "count": M}`; a body that is
//! not such JSON answers 400; `/fail` returns an `Err`, which the SDK turns
//! into a 500.

use serde::{Deserialize, Serialize};
use shoal::{Request, Response};

#[derive(Deserialize)]
struct Numbers {
    numbers: Vec<i64>,
}

#[derive(Serialize)]
struct Sum {
    sum: i64,
    count: usize,
}

fn handle(request: Request) -> Result<Response, String> {
    if request.path().ends_with("/fail") {
        return Err("deliberate failure".to_owned());
    }
    Ok(match request.json::<Numbers>() {
        Ok(Numbers { numbers }) => Response::json(&Sum {
            sum: numbers.iter().sum(),
            count: numbers.len(),
        }),
        Err(error) => Response::error(400, format!("expected {{\"numbers\": [..]}}: {error}")),
    })
}

shoal::export!(handle);
