module trustpool

go 1.26.8
