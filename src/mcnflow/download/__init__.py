"""The download stage: one shard of videos with yt-dlp (or local files), one ledger row per video.

One module per concern: ``fetch`` (one video), ``classify`` (what a yt-dlp message means),
``policy`` (retries, cool-downs and systemic stops over a shard), ``canary`` (a block, or real
deletions?), ``resume`` (what earlier runs settled), ``survival`` (``mcnflow survival``) and
``cli`` (``mcnflow download``). Nothing is imported here, so ``mcnflow survival`` does not load yt-dlp.
"""
