//! A progress line for long runs over many images: images done, people per second and the time
//! left, on stderr.
//!
//! On a terminal the line is redrawn in place at most five times a second; otherwise (a log file,
//! CI) a full line is written every ten seconds. [`Progress::finish`] writes the last state and a
//! newline.
//!
//! ```text
//! images 1200/5000 (24.0%)  people 8541  41.3 people/s  5.8 images/s  ETA 10m55s
//! ```

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Progress over a known number of images.
pub struct Progress {
    total: usize,
    images: usize,
    people: usize,
    start: Instant,
    last: Option<Instant>,
    interval: Duration,
    in_place: bool,
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("total", &self.total)
            .field("images", &self.images)
            .field("people", &self.people)
            .finish_non_exhaustive()
    }
}

impl Progress {
    /// Progress over `total` images, drawn on stderr.
    pub fn new(total: usize) -> Progress {
        let in_place = std::io::stderr().is_terminal();
        let interval = if in_place {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        };
        Progress::to_writer(total, Box::new(std::io::stderr()), in_place, interval)
    }

    /// Progress drawn on `out`: redrawn in place (`\r`) or one line each time, at most once per
    /// `interval`.
    pub fn to_writer(
        total: usize,
        out: Box<dyn Write + Send>,
        in_place: bool,
        interval: Duration,
    ) -> Progress {
        Progress {
            total,
            images: 0,
            people: 0,
            start: Instant::now(),
            last: None,
            interval,
            in_place,
            out,
        }
    }

    /// Counts `images` more images holding `people` people, and redraws when it is time.
    pub fn advance(&mut self, images: usize, people: usize) {
        self.images += images;
        self.people += people;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= self.interval)
        {
            self.last = Some(now);
            self.draw(now, false);
        }
    }

    /// Writes the final state and ends the line.
    pub fn finish(&mut self) {
        self.draw(Instant::now(), true);
    }

    fn draw(&mut self, now: Instant, last: bool) {
        let line = render(
            self.images,
            self.total,
            self.people,
            now.duration_since(self.start),
        );
        // Progress output is best effort: a closed stderr must not stop the run.
        let _ = if self.in_place {
            write!(self.out, "\r{line}\x1b[K{}", if last { "\n" } else { "" })
        } else {
            writeln!(self.out, "{line}")
        };
        let _ = self.out.flush();
    }
}

/// The progress line for `images` of `total` images and `people` people after `elapsed`.
pub fn render(images: usize, total: usize, people: usize, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let percent = if total == 0 {
        100.0
    } else {
        100.0 * images as f64 / total as f64
    };
    let mut line = format!("images {images}/{total} ({percent:.1}%)  people {people}");
    if secs > 0.0 && images > 0 {
        let per_image = secs / images as f64;
        let left = per_image * total.saturating_sub(images) as f64;
        line += &format!(
            "  {:.1} people/s  {:.1} images/s  ETA {}",
            people as f64 / secs,
            images as f64 / secs,
            clock(left)
        );
    }
    line
}

/// `1h02m03s`, `4m05s`, `6s`.
fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn line_shows_counts_rates_and_time_left() {
        let line = render(1200, 5000, 8541, Duration::from_secs(200));
        assert_eq!(
            line,
            "images 1200/5000 (24.0%)  people 8541  42.7 people/s  6.0 images/s  ETA 10m33s"
        );
        assert_eq!(
            render(0, 10, 0, Duration::ZERO),
            "images 0/10 (0.0%)  people 0"
        );
        assert_eq!(clock(3723.0), "1h02m03s");
        assert_eq!(clock(6.4), "6s");
    }

    #[derive(Clone)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn redraws_at_most_once_per_interval_and_finishes_the_line() {
        let buf = Shared(Arc::new(Mutex::new(Vec::new())));
        let mut p = Progress::to_writer(3, Box::new(buf.clone()), true, Duration::from_secs(3600));
        p.advance(1, 2);
        p.advance(1, 3); // within the interval: not drawn
        p.advance(1, 0);
        p.finish();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches('\r').count(), 2, "{text:?}");
        assert!(
            text.starts_with("\rimages 1/3 (33.3%)  people 2"),
            "{text:?}"
        );
        assert!(text.contains("\rimages 3/3 (100.0%)  people 5"), "{text:?}");
        assert!(text.ends_with("\x1b[K\n"), "{text:?}");
    }
}
