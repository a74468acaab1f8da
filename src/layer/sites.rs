//! What the layer needs to know about a span's callsite: whether its fields
//! mark it for capture, and which of its fields can name its session. Worked
//! out once per callsite (and thread), instead of comparing field names at
//! every span.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::Metadata;

use crate::map;

/// Session fields remembered per callsite, at most (in order of preference;
/// a callsite with more fields that are session keys is beyond any real use).
const MAX_SESSION_FIELDS: usize = 8;

/// Callsites remembered per thread; past this they are worked out each time.
const CACHED: usize = 64;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Site {
    /// A field's name marks the span for capture ([`map::is_capture_key`]).
    pub(crate) capture: bool,
    sessions: [u8; MAX_SESSION_FIELDS],
    n: u8,
}

impl Site {
    fn of(meta: &Metadata<'_>, keys: &[String]) -> Site {
        let fields = meta.fields();
        let mut site = Site {
            capture: fields.iter().any(|f| map::is_capture_key(f.name())),
            sessions: [0; MAX_SESSION_FIELDS],
            n: 0,
        };
        for k in keys {
            if let Some(f) = fields.field(k.as_str()) {
                if (site.n as usize) < MAX_SESSION_FIELDS {
                    site.sessions[site.n as usize] = f.index() as u8;
                    site.n += 1;
                }
            }
        }
        site
    }

    /// The indexes of the fields that are session keys, in the keys' order.
    pub(crate) fn sessions(&self) -> &[u8] {
        &self.sessions[..self.n as usize]
    }
}

/// A number per layer, so that layers with different session keys never
/// share a cached [`Site`].
pub(crate) fn new_layer_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    static SITES: RefCell<Vec<(u64, usize, Site)>> = const { RefCell::new(Vec::new()) };
}

/// The [`Site`] of `meta` for layer `layer` (with session keys `keys`).
pub(crate) fn site(layer: u64, meta: &'static Metadata<'static>, keys: &[String]) -> Site {
    let addr = std::ptr::from_ref(meta) as usize;
    SITES
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(&(_, _, s)) = cache.iter().find(|e| e.0 == layer && e.1 == addr) {
                return s;
            }
            let s = Site::of(meta, keys);
            if cache.len() < CACHED {
                cache.push((layer, addr, s));
            }
            s
        })
        .unwrap_or_else(|_| Site::of(meta, keys))
}
