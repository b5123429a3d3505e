"""Write examples/data/reviews.csv: 600 short synthetic film reviews (columns text, label) for trying
`+experiment=text_sentiment` on a fresh clone without a download. Templated sentences whose sentiment is
carried by one adjective among neutral words (and by "not" flipping it), so a bag of words does not
solve them entirely; a toy, not a benchmark. `python scripts/make_sample_reviews.py` remakes the file."""

import csv
import random
from pathlib import Path

POSITIVE = ["wonderful", "moving", "brilliant", "charming", "gripping", "delightful", "superb", "beautiful"]
NEGATIVE = ["dull", "clumsy", "tedious", "awful", "lifeless", "confusing", "boring", "shallow"]
SUBJECTS = ["the film", "the story", "the acting", "the script", "the ending", "the soundtrack", "the direction"]
OPENERS = ["honestly", "to be fair", "all in all", "from the start", "by the end", "for me", "in the cinema"]
TAILS = ["and i would say so again", "as my friends agreed", "whatever the critics wrote", "on a rainy sunday",
         "despite the long queue", "with a bucket of popcorn", ""]


def review(rng: random.Random) -> tuple[str, str]:
    positive = rng.random() < 0.5
    negated = rng.random() < 0.25  # "not dull" reads positive
    word = rng.choice(NEGATIVE if positive == negated else POSITIVE)
    text = f"{rng.choice(OPENERS)} {rng.choice(SUBJECTS)} was {'not ' if negated else ''}{word} {rng.choice(TAILS)}"
    return " ".join(text.split()), "pos" if positive else "neg"


def main() -> None:
    rng = random.Random(0)
    path = Path(__file__).resolve().parents[1] / "examples" / "data" / "reviews.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(review(rng) for _ in range(600))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
