"""The web dashboard: static pages and assets served by Ringfence itself (no CDN, no inline
script), which read and act through the same HTTP API with a browser session."""
