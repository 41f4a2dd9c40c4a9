"""Which AudioSet videos still play, and what they are called.

AudioSet's segments are YouTube videos, and about a sixth of them are gone (removed, private, accounts closed:
REFERENCE.md section 9). Before an answer is shown its matches' videos are checked (:mod:`~musrec.recommend.live`),
within a time budget, against YouTube's oEmbed endpoint (:mod:`~musrec.videos.oembed`) or, with a key, the Data
API (:mod:`~musrec.videos.dataapi`); states are kept with an expiry in SQLite (:mod:`~musrec.videos.store`) by
the :class:`~musrec.videos.checker.VideoChecker`. The index itself is never changed.
"""
