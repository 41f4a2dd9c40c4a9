"""The musrec Discord bot: /recommend, /compare, /about, and (optionally) posted clips and links.

It only translates between Discord and the musrec library: everything it knows about audio lives in ``musrec``.
"""
