"""The DEX-led plan's research side: windowed DEX features (`features`), Phase A rule-based
signals (`signals`), reward-score labels (`labels`) and the labelled signal set (`dataset`).
Columnar over a DEX tape (`storage.dex_tape`); Ray- and Bytewax-free."""
