#!/usr/bin/env python3
"""How much card precision@100 any streaming model could reach on a handbook file.

Reads `ringfence eval --predictions-out PRED` and the `simulate --profile handbook` file it
came from, replays the card-precision protocol (per test day: the highest score per card, the
top 100 cards, cards caught on an earlier day dropped), and sorts every compromised card the
model left out of the top 100 by why:

- `s2_invisible`: its only frauds are at a compromised terminal (scenario 2) no confirmed
  fraud of which is visible yet (all younger than the label delay). In this design those
  transactions look exactly like genuine ones: nothing but a label can tell them apart.
- `s2_visible`, `scen1`, `scen3`: the evidence existed (visible terminal labels, an amount
  over 220, a card's spending pattern).

The ceiling adds every missed card that had evidence to the model's hits: what a model
perfect on everything detectable would score, approximately (it ignores that catching a card
earlier drops it from later days). Standard library only.

Usage: scripts/handbook_ceiling.py PRED.csv HANDBOOK.csv [--delay-days 7]
"""
import csv
import sys
from collections import defaultdict


def main():
    args = sys.argv[1:]
    delay_days = 7
    if "--delay-days" in args:
        i = args.index("--delay-days")
        delay_days = int(args[i + 1])
        del args[i : i + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    pred_path, data_path = args
    delay = delay_days * 86400

    tx = {}
    s2_frauds = defaultdict(list)  # terminal -> times of its scenario-2 frauds
    with open(data_path, newline="") as f:
        for r in csv.DictReader(f):
            t = int(r["TX_TIME_SECONDS"])
            scen = int(r["TX_FRAUD_SCENARIO"])
            tx[r["TRANSACTION_ID"]] = (int(r["TX_TIME_DAYS"]), r["TERMINAL_ID"], t, scen)
            if scen == 2:
                s2_frauds[r["TERMINAL_ID"]].append(t)

    def why(rows):
        """Why a missed compromised card's frauds of one day were detectable, if they were."""
        kind = "s2_invisible"
        for terminal, t, scen in rows:
            if scen != 2:
                return f"scen{scen}"
            if any(t - delay - 30 * 86400 < s <= t - delay for s in s2_frauds[terminal]):
                kind = "s2_visible"
        return kind

    folds = defaultdict(lambda: defaultdict(list))
    with open(pred_path, newline="") as f:
        for r in csv.DictReader(f):
            day, terminal, t, scen = tx[r["transaction_id"]]
            folds[r["fold"]][day].append(
                (r["card_id"], float(r["score"]), r["label"] == "1", terminal, t, scen)
            )

    hits_total, days, missed = 0, 0, defaultdict(int)
    for fold in sorted(folds):
        caught = set()
        for day in sorted(folds[fold]):
            days += 1
            cards = {}
            for card, score, fraud, terminal, t, scen in folds[fold][day]:
                if card in caught:
                    continue
                best, is_fraud, rows = cards.get(card, (float("-inf"), False, []))
                if fraud:
                    rows.append((terminal, t, scen))
                cards[card] = (max(best, score), is_fraud or fraud, rows)
            ranked = sorted(cards.items(), key=lambda kv: (-kv[1][0], kv[0]))
            top = ranked[:100]
            hits = [c for c, (_, fraud, _) in top if fraud]
            hits_total += len(hits)
            caught.update(hits)
            for card, (_, fraud, rows) in ranked[100:]:
                if fraud:
                    missed[why(rows)] += 1

    detectable = sum(v for k, v in missed.items() if k != "s2_invisible")
    print(f"card precision@100: {hits_total / days / 100:.3f} over {days} test days")
    print("missed compromised card-days by cause:", dict(sorted(missed.items())))
    print(f"ceiling with every detectable one caught: {(hits_total + detectable) / days / 100:.3f}")


if __name__ == "__main__":
    main()
