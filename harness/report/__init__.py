"""Numbers -> one self-contained HTML page: figures (seaborn, inline) and page (tables, the
template). Reads through analysis/, never imports training/ or prediction/, nor torch."""
