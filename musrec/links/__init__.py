"""Links as input: which YouTube links are accepted (``parse``), what may be fetched and how (``options``),
fetching just the window of one with yt-dlp under the host policy (``fetch``, ``ytdlp_params``, ``ytdlp_env``)
behind a proxy of the fetch's own that lets connections reach public addresses only (``guard``, ``proxy_http``,
``addresses``), through an egress proxy if one is set (``upstream``), yt-dlp's failures as short reasons
(``errors``), and the doctor's checks of all this (``health``)."""
