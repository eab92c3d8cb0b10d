//! What a section of the report measured, or why it could not: a section
//! that fails is reported as failed, and the run goes on.

/// A section's results, one per function, or why it failed.
#[derive(Debug, Clone)]
pub struct Section<T> {
    /// One per function; empty if the section failed.
    pub functions: Vec<T>,
    /// Why the section failed, if it did.
    pub failure: Option<String>,
}

impl<T> Section<T> {
    /// Runs `measure`, announced as `title`; a failure is kept, not fatal.
    pub async fn run(title: &str, measure: impl Future<Output = anyhow::Result<Vec<T>>>) -> Self {
        eprintln!("==> {title}");
        match measure.await {
            Ok(functions) => Self {
                functions,
                failure: None,
            },
            Err(error) => {
                eprintln!("    failed: {error:#}");
                Self {
                    functions: Vec::new(),
                    failure: Some(format!("{error:#}")),
                }
            }
        }
    }

    /// The report's line for a failed section, if it failed.
    pub fn failure_line(&self) -> Option<String> {
        self.failure
            .as_ref()
            .map(|failure| format!("**The section failed:** {failure}\n"))
    }
}
