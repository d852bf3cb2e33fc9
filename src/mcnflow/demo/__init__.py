"""The offline demo: a synthetic corpus in the real formats and the local HTTP server yt-dlp downloads it from."""
