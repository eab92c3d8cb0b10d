//! What a test's subscriber writes, kept for the test to read.

use std::sync::{Arc, Mutex};

/// Everything written through [`Captured::writer`], shared with the test.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// A writer for a subscriber's `with_writer`, writing here.
    pub(crate) fn writer(&self) -> impl Fn() -> Self + Send + Sync + 'static {
        let captured = self.clone();
        move || captured.clone()
    }

    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
