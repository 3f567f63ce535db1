"""``abdus review``: a browser page where a sonographer checks and corrects calipers.

``store`` holds the items, their versions and the reviewed manifest; ``priority`` orders the
work list; ``exports`` writes CSV, COCO keypoints and verified SRs; ``app`` is the FastAPI
server (the page itself lives in ``static/``).
"""
