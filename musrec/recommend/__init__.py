"""Recommendations: the nearest AudioSet segments to a query, as typed results.

- :mod:`~musrec.recommend.results`: the types a search returns, and the filters it applies;
- :mod:`~musrec.recommend.nearest`: the filtered search itself;
- :mod:`~musrec.recommend.segments`: ``audioset:VIDEO_ID[@START]`` references, indexed segments as queries;
- :mod:`~musrec.recommend.blend`: the segments that sound like two or three sounds at once;
- :mod:`~musrec.recommend.live`: answers with live videos only (the gone ones left out, ``k`` kept).
"""
