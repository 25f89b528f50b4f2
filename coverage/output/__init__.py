"""What a plan becomes: files, Folium maps with their offline assets, comparisons of two plans."""
